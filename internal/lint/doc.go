// Package lint holds polytropon's lint rules, written as Go tests so that `go test`
// and CI enforce them (CONVENTIONS 15). The package has no non-test code.
//
// Rules, each with its reason beside it in lint_test.go: gofmt; forbidden imports;
// `unsafe` only in files named *_unsafe.go; no catch-all package names; every
// package has a doc comment.
package lint
