package lint

import (
	"bytes"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/polytropon/polytropon"

// importRule forbids imports matching bad in packages under dir (module-relative).
type importRule struct {
	dir    string
	bad    func(path string) bool
	reason string
}

func stdlib(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func under(prefix string) func(string) bool {
	return func(p string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }
}

var importRules = []importRule{
	{
		dir: "ipc/rcqb",
		bad: func(p string) bool { return !stdlib(p) && !under("golang.org/x/sys")(p) },
		reason: "the queue sits on every request of the direct path and is shared with a C client later: " +
			"it may use only the standard library and x/sys, so it has no hidden allocation or lock",
	},
	{
		dir: "ipc/memcopy",
		bad: func(p string) bool {
			return !stdlib(p) && !under("golang.org/x/sys")(p) && !under(module+"/internal/invariants")(p) && p != module+"/ipc/memcopy"
		},
		reason: "copy kernels are leaf code on the hot path: only the standard library, x/sys " +
			"and the invariants switch (compiled out of normal builds)",
	},
	{
		dir:    "libservices",
		bad:    under(module + "/drivers"),
		reason: "libservices reach block devices only through the blockdev contract, never a driver such as drivers/nvme directly",
	},
	{
		dir:    "",
		bad:    under("github.com/iceber/iouring-go"),
		reason: "iceber/iouring-go does not link on Go 1.26 and its SQPOLL wake-up is wrong: use drivers/uring",
	},
}

// forbiddenPkgNames are catch-all names that hide what a package is (CONVENTIONS 1).
var forbiddenPkgNames = map[string]bool{"util": true, "utils": true, "common": true, "types": true, "helpers": true, "misc": true}

type goFile struct {
	rel  string // module-relative path, slash-separated
	src  []byte
	file *ast.File
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the lint package")
		}
		dir = parent
	}
}

func loadFiles(t *testing.T) []goFile {
	t.Helper()
	root := repoRoot(t)
	var files []goFile
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, path, src, parser.ParseComments|parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		files = append(files, goFile{rel: filepath.ToSlash(rel), src: src, file: f})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no Go files found")
	}
	return files
}

// TestGofmt: formatting is not a matter of taste in Go; unformatted code hides diffs.
func TestGofmt(t *testing.T) {
	for _, f := range loadFiles(t) {
		want, err := format.Source(f.src)
		if err != nil {
			t.Errorf("%s: %v", f.rel, err)
			continue
		}
		if !bytes.Equal(want, f.src) {
			t.Errorf("%s is not gofmt-formatted (run gofmt -w %s)", f.rel, f.rel)
		}
	}
}

func TestForbiddenImports(t *testing.T) {
	for _, f := range loadFiles(t) {
		for _, imp := range f.file.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, r := range importRules {
				if r.dir != "" && !under(r.dir)(filepath.ToSlash(filepath.Dir(f.rel))) {
					continue
				}
				if r.bad(p) {
					t.Errorf("%s imports %s: %s", f.rel, p, r.reason)
				}
			}
		}
	}
}

// TestUnsafeFileNames: unsafe code is where memory corruption comes from; keeping it
// in *_unsafe.go files makes every such line easy to find and review (CONVENTIONS 6).
func TestUnsafeFileNames(t *testing.T) {
	for _, f := range loadFiles(t) {
		base := strings.TrimSuffix(filepath.Base(f.rel), ".go")
		base = strings.TrimSuffix(base, "_test")
		for _, imp := range f.file.Imports {
			if imp.Path.Value == `"unsafe"` && !strings.HasSuffix(base, "_unsafe") {
				t.Errorf("%s imports unsafe: move that code to a file named *_unsafe.go", f.rel)
			}
		}
	}
}

func TestPackageNamesAndDocs(t *testing.T) {
	type pkgInfo struct {
		name   string
		hasDoc bool
		nonTst bool
	}
	pkgs := map[string]*pkgInfo{}
	for _, f := range loadFiles(t) {
		dir := filepath.Dir(f.rel)
		name := f.file.Name.Name
		if strings.HasSuffix(name, "_test") {
			continue
		}
		p := pkgs[dir]
		if p == nil {
			p = &pkgInfo{name: name}
			pkgs[dir] = p
		}
		if !strings.HasSuffix(f.rel, "_test.go") {
			p.nonTst = true
		}
		if f.file.Doc != nil && strings.HasPrefix(f.file.Doc.Text(), "Package "+name) ||
			(name == "main" && f.file.Doc != nil && strings.HasPrefix(f.file.Doc.Text(), "Command ")) {
			p.hasDoc = true
		}
	}
	for dir, p := range pkgs {
		if forbiddenPkgNames[p.name] {
			t.Errorf("%s: package name %q says nothing about what it holds", dir, p.name)
		}
		// A package comment says what the package is and what it is not (CONVENTIONS 1).
		if p.nonTst && !p.hasDoc {
			t.Errorf("%s: package %s has no package doc comment (\"Package %s ...\")", dir, p.name, p.name)
		}
	}
}
