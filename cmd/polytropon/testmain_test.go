package main

import (
	"os"
	"testing"
)

// asMainEnv makes the test binary behave as the polytropon command: commands that
// re-execute their own binary (perf run starts `polytropon service` and `polytropon
// perf worker`) then get the real CLI rather than the test runner.
const asMainEnv = "POLYTROPON_CMD_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Setenv(asMainEnv, "1") // for the children only: this process is past the check
	os.Exit(m.Run())
}
