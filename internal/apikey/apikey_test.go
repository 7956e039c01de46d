package apikey

import (
	"regexp"
	"strings"
	"testing"
)

func TestGenerateParse(t *testing.T) {
	re := regexp.MustCompile(Pattern)
	seen := map[string]bool{}
	for _, env := range []string{EnvProduction, EnvStaging, EnvDevelopment} {
		for range 200 {
			k, err := Generate(env)
			if err != nil {
				t.Fatal(err)
			}
			if err := Parse(k); err != nil {
				t.Fatalf("generated key does not parse: %v", err)
			}
			if !re.MatchString(k) || len(re.FindString(k)) != Len {
				t.Fatalf("generated key does not match the published pattern")
			}
			if strings.HasPrefix(k, LivePrefix) != (env == EnvProduction) {
				t.Fatalf("wrong prefix for %s", env)
			}
			if seen[k] {
				t.Fatal("duplicate key")
			}
			seen[k] = true
		}
	}
}

func TestParseRejects(t *testing.T) {
	good, _ := Generate(EnvProduction)
	flip := func(i int) string {
		b := []byte(good)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	cases := map[string]struct {
		key  string
		want error
	}{
		"empty":            {"", ErrLength},
		"short":            {good[:Len-1], ErrLength},
		"long":             {good + "x", ErrLength},
		"wrong prefix":     {"mtr_prod_" + good[9:], ErrPrefix},
		"old sk prefix":    {"mtr_sk_li" + good[9:], ErrPrefix},
		"non base62":       {good[:20] + "-" + good[21:], ErrCharset},
		"non ascii":        {good[:20] + "\xff" + good[21:], ErrCharset},
		"random typo":      {flip(20), ErrChecksum},
		"checksum typo":    {flip(Len - 1), ErrChecksum},
		"live to test":     {TestPrefix + good[9:], ErrChecksum},
		"all zeros random": {LivePrefix + strings.Repeat("0", 46), ErrChecksum},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if err := Parse(tc.key); err != tc.want {
				t.Fatalf("Parse = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestHashIDHint(t *testing.T) {
	k, _ := Generate(EnvStaging)
	h := HashOf(k)
	back, err := ParseHash(h.String())
	if err != nil || back != h {
		t.Fatalf("hash round trip failed: %v", err)
	}
	if len(h.ID()) != 12 || strings.Contains(k, h.ID()) {
		t.Fatalf("unexpected id %q", h.ID())
	}
	hint := Hint(k)
	if !strings.HasPrefix(hint, TestPrefix) || len(hint) > len(TestPrefix)+4+len("…") {
		t.Fatalf("hint %q shows too much", hint)
	}
	if _, err := ParseHash("zz"); err == nil {
		t.Fatal("ParseHash accepted garbage")
	}
}

func TestParseAllocatesNothing(t *testing.T) {
	k, _ := Generate(EnvProduction)
	if n := testing.AllocsPerRun(100, func() { _ = Parse(k); _ = HashOf(k) }); n != 0 {
		t.Fatalf("Parse and HashOf allocate %v times", n)
	}
}

func FuzzParse(f *testing.F) {
	k, _ := Generate(EnvProduction)
	f.Add(k)
	f.Add("")
	f.Add("mtr_live_")
	f.Add("mtr_test_" + strings.Repeat("z", 46))
	f.Fuzz(func(t *testing.T, s string) {
		err := Parse(s)
		switch err {
		case nil, ErrLength, ErrPrefix, ErrCharset, ErrChecksum:
		default:
			t.Fatal("Parse returned an error other than its fixed ones, which might carry the input")
		}
		if err == nil {
			if !regexp.MustCompile(`^` + Pattern + `$`).MatchString(s) {
				t.Fatal("accepted a key outside the published pattern")
			}
		}
	})
}

func BenchmarkParseHash(b *testing.B) {
	k, _ := Generate(EnvProduction)
	b.ReportAllocs()
	for b.Loop() {
		if Parse(k) == nil {
			_ = HashOf(k)
		}
	}
}
