package intake

import (
	"encoding/json"
	"testing"
)

// The intakes parse bodies and headers from the internet: none of them may
// panic, and a body that parses keeps its bounds.

func FuzzParseGitLab(f *testing.F) {
	f.Add([]byte(`[{"type":"` + GitLabTokenType + `","token":"t","location":"l"}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"type":"other"}]`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseGitLab(body, 10)
		if err == nil && len(r) > 10 {
			t.Fatalf("%d reports past the bound", len(r))
		}
	})
}

func FuzzParseGitHub(f *testing.F) {
	f.Add([]byte(`[{"token":"t","type":"x","url":"u","source":"content"}]`))
	f.Add([]byte(`[] 1`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseGitHub(body, 10)
		if err == nil && len(r) > 10 {
			t.Fatalf("%d tokens past the bound", len(r))
		}
	})
}

func FuzzParseGitHubKeys(f *testing.F) {
	s := newGitHubSigner(f, "k")
	doc, _ := json.Marshal(map[string]any{"public_keys": []any{s.keyJSON(f, true)}})
	f.Add(doc)
	f.Add([]byte(`{"public_keys":[{"key_identifier":"a","key":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}]}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		keys, err := ParseGitHubKeys(doc)
		if err == nil {
			for id, k := range keys {
				if id == "" || k.Key == nil {
					t.Fatal("a key without an identifier or a key")
				}
			}
		}
	})
}

func FuzzVerifyGitHub(f *testing.F) {
	s := newGitHubSigner(f, "k")
	keys := map[string]PublicKey{"k": {Key: &s.priv.PublicKey, Current: true}}
	body := []byte(`[{"token":"t"}]`)
	f.Add("k", s.sign(f, body), body)
	f.Add("k", "AAAA", body)
	f.Add("", "", []byte{})
	f.Fuzz(func(t *testing.T, keyID, sig string, body []byte) {
		_ = VerifyGitHub(keys, keyID, sig, body)
	})
}
