// Package lint holds polytropon's lint rules, written as Go tests so that `go test`
// and CI enforce them: a rule that is only written down is not kept. The package
// has no non-test code.
//
// Rules, each with its reason beside it in lint_test.go: gofmt; forbidden imports
// (the hot-path leaves ipc/rcqb and ipc/memcopy import only the standard library,
// x/sys and the invariants switch; libservices reach devices only through the
// blockdev contract; no iceber/iouring-go); `unsafe` only in files named
// *_unsafe.go, so every such line is easy to find and review; no catch-all package
// names (util, common, types, helpers, misc), which hide what a package is; every
// package has a doc comment saying what it is. In tracked_test.go: no tracked
// file is an executable other than a #! script, or over 1 MiB outside
// docs/results (read from `git ls-files`; without git or a checkout the test
// skips, or fails under POLYTROPON_REQUIRE_PRIVILEGED=1).
//
// It walks the module's source from go.mod down and needs nothing outside the
// repository. Run it with `go test ./internal/lint`; it measures nothing.
package lint
