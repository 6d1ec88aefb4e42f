// Package lint holds polytropon's lint rules, written as Go tests so that `go test`
// and CI enforce them (CONVENTIONS 15). The package has no non-test code.
//
// Rules, each with its reason beside it in lint_test.go: gofmt; forbidden imports;
// `unsafe` only in files named *_unsafe.go; no catch-all package names; every
// package has a doc comment. In tracked_test.go: no tracked file is an
// executable other than a #! script, or over 1 MiB outside docs/results (read
// from `git ls-files`; without git or a checkout the test skips, or fails
// under POLYTROPON_REQUIRE_PRIVILEGED=1).
package lint
