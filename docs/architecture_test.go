// Package docs keeps docs/architecture.md true: every file and directory it
// names exists, and every function, method, type or constant it names is
// declared somewhere in the module. A rename that forgets the page fails here.
package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	codeSpan = regexp.MustCompile("`([^`\n]+)`")
	// A path: letters, digits, dots, dashes and slashes, with a slash or a
	// .go suffix (a bare "server.go" is looked up by its base name).
	pathLike = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]*)*$`)
	// A Go name, optionally qualified (pkg.Type.Method).
	identLike = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
)

func TestArchitectureNamesExist(t *testing.T) {
	page, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	decls, bases := declarations(t, "..")
	checked := 0
	for _, m := range codeSpan.FindAllStringSubmatch(string(page), -1) {
		s := strings.TrimSuffix(m[1], "/")
		switch {
		case strings.Contains(s, "..."):
			// test/..., a pattern, not a path
		case pathLike.MatchString(s) && (strings.Contains(s, "/") && !strings.HasPrefix(s, "/") || strings.HasSuffix(s, ".go")):
			checked++
			if !strings.Contains(s, "/") {
				if !bases[s] {
					t.Errorf("docs/architecture.md names %s: no file of that name in the module", s)
				}
				continue
			}
			// A package path that is not ours (net/http) is not a file
			// here; a Go file always is.
			if _, err := os.Stat(filepath.Join("..", strings.SplitN(s, "/", 2)[0])); err != nil && !strings.HasSuffix(s, ".go") {
				continue
			}
			if _, err := os.Stat(filepath.Join("..", s)); err != nil {
				t.Errorf("docs/architecture.md names %s: %v", s, err)
			}
		case identLike.MatchString(s) && codeName(s):
			checked++
			parts := strings.Split(s, ".")
			for i, p := range parts {
				// The first part of a qualified name may be a package.
				if i == 0 && len(parts) > 1 && p == strings.ToLower(p) {
					continue
				}
				// A CRD field (expiresAt) is its Go field (ExpiresAt).
				if !decls[p] && !decls[strings.ToUpper(p[:1])+p[1:]] {
					t.Errorf("docs/architecture.md names %s: %s is declared nowhere in the module", s, p)
				}
			}
		}
	}
	if checked < 50 {
		t.Fatalf("only %d names checked: the page or this test's patterns changed", checked)
	}
}

// codeName tells a Go name from a word that happens to be in backquotes
// (Authorization, Ready, k8s.io): a qualified name with an upper-case
// letter (apikey.Parse, Decider.restrict), or a name with an upper-case
// letter after its first (decideIssue, RecordReaper).
func codeName(s string) bool {
	const upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	if strings.Contains(s, ".") {
		return strings.ContainsAny(s, upper)
	}
	return strings.ContainsAny(s[1:], upper)
}

// declarations returns every name declared at the top level of the module's
// Go files (functions, methods, types, constants, variables, struct fields)
// and every file's base name.
func declarations(t *testing.T, root string) (map[string]bool, map[string]bool) {
	decls, bases := map[string]bool{}, map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "bin", ".git", "node_modules", "testdata", "dist":
				return filepath.SkipDir
			}
			return nil
		}
		bases[d.Name()] = true
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				decls[n.Name.Name] = true
			case *ast.TypeSpec:
				decls[n.Name.Name] = true
			case *ast.ValueSpec:
				for _, id := range n.Names {
					decls[id.Name] = true
				}
			case *ast.Field:
				for _, id := range n.Names {
					decls[id.Name] = true
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return decls, bases
}
