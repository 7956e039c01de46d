package cmd

import (
	"strings"
	"testing"

	"github.com/meterr/meterr-operator/internal/apikey"
)

func TestReadKeys(t *testing.T) {
	a, _ := apikey.Generate("production")
	b, _ := apikey.Generate("staging")
	bad := a[:len(a)-1] + "x" // a checksum that does not match (or a base62 change)
	if apikey.Parse(bad) == nil {
		bad = a[:len(a)-1]
	}
	in := "\n" + a + "\n  " + b + "  \n" + bad + "\n" + a + "\nnot a key\n"
	keys, malformed, err := readKeys(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].key != a || keys[0].line != 2 || keys[1].key != b || keys[1].line != 3 {
		t.Fatalf("keys: %d (a duplicate is read once, blank lines skipped)", len(keys))
	}
	if len(malformed) != 2 || malformed[0] != 4 || malformed[1] != 6 {
		t.Fatalf("malformed lines: %v", malformed)
	}

	if _, _, err := readKeys(strings.NewReader(strings.Repeat("\n", maxRevokeLines+1))); err == nil {
		t.Fatal("no bound on the number of lines")
	}
	if _, _, err := readKeys(strings.NewReader(strings.Repeat("a", 5000))); err == nil {
		t.Fatal("no bound on a line's length")
	}
}

func FuzzReadKeys(f *testing.F) {
	k, _ := apikey.Generate("production")
	f.Add(k + "\n" + k[:20] + "\n")
	f.Fuzz(func(t *testing.T, in string) {
		keys, _, err := readKeys(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, k := range keys {
			if apikey.Parse(k.key) != nil {
				t.Fatal("a malformed key was kept")
			}
		}
	})
}
