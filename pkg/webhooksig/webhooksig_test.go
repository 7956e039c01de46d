package webhooksig

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	t0     = time.Unix(1700000000, 0)
	secret = []byte("whsec_test")
	body   = []byte(`{"a":1}`)
)

// Vectors from openssl: printf BODY | openssl dgst -sha256 -hmac SECRET.
func TestKnownVectors(t *testing.T) {
	if got := Sign([]byte("secret"), []byte("hello")); got != "88aab3ede8d3adf94d26ab90d3bafd4a2083070c3bcce9c014ee04a443847c0b" {
		t.Errorf("Sign = %s", got)
	}
	got, err := SignAt(body, t0, secret)
	if err != nil || got != "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789" {
		t.Errorf("SignAt = %s, %v", got, err)
	}
}

func at(d time.Duration) func() time.Time { return func() time.Time { return t0.Add(d) } }

func TestVerify(t *testing.T) {
	old, cur := []byte("old-secret"), []byte("new-secret")
	both, _ := SignAt(body, t0, old, cur)
	onlyOld, _ := SignAt(body, t0, old)
	onlyNew, _ := SignAt(body, t0, cur)
	legacy := Sign(cur, body)
	for _, tc := range []struct {
		name    string
		v       Verifier
		body    []byte
		header  string
		wantErr error
	}{
		{"versioned", Verifier{Secrets: [][]byte{cur}, Now: at(0)}, body, onlyNew, nil},
		{"either secret during a rotation (verifier side)", Verifier{Secrets: [][]byte{old, cur}, Now: at(0)}, body, onlyOld, nil},
		{"either secret during a rotation (sender side)", Verifier{Secrets: [][]byte{cur}, Now: at(0)}, body, both, nil},
		{"retired secret", Verifier{Secrets: [][]byte{cur}, Now: at(0)}, body, onlyOld, ErrMismatch},
		{"tampered body", Verifier{Secrets: [][]byte{cur}, Now: at(0)}, []byte(`{"a":2}`), onlyNew, ErrMismatch},
		{"re-serialised body", Verifier{Secrets: [][]byte{cur}, Now: at(0)}, []byte(`{ "a": 1 }`), onlyNew, ErrMismatch},
		{"within the tolerance", Verifier{Secrets: [][]byte{cur}, Now: at(5 * time.Minute)}, body, onlyNew, nil},
		{"too old", Verifier{Secrets: [][]byte{cur}, Now: at(5*time.Minute + time.Second)}, body, onlyNew, ErrTimestamp},
		{"from the future", Verifier{Secrets: [][]byte{cur}, Now: at(-6 * time.Minute)}, body, onlyNew, ErrTimestamp},
		{"own tolerance", Verifier{Secrets: [][]byte{cur}, Tolerance: time.Hour, Now: at(30 * time.Minute)}, body, onlyNew, nil},
		{"replayed with a new timestamp", Verifier{Secrets: [][]byte{cur}, Now: at(time.Hour)},
			body, strings.Replace(onlyNew, "t=1700000000", "t=1700003600", 1), ErrMismatch},
		{"legacy refused by default", Verifier{Secrets: [][]byte{cur}}, body, legacy, ErrLegacy},
		{"legacy when allowed", Verifier{Secrets: [][]byte{old, cur}, AllowLegacy: true}, body, legacy, nil},
		{"legacy, upper-case hex", Verifier{Secrets: [][]byte{cur}, AllowLegacy: true}, body, strings.ToUpper(legacy), nil},
		{"legacy mismatch", Verifier{Secrets: [][]byte{old}, AllowLegacy: true}, body, legacy, ErrMismatch},
		{"unknown scheme ignored", Verifier{Secrets: [][]byte{cur}, Now: at(0)}, body, onlyNew + ",v2=zzz", nil},
		{"spaces around fields", Verifier{Secrets: [][]byte{cur}, Now: at(0)}, body, strings.ReplaceAll(onlyNew, ",", " , "), nil},
		{"no header", Verifier{Secrets: [][]byte{cur}}, body, "  ", ErrNoSignature},
		{"no secret", Verifier{}, body, onlyNew, ErrNoSecret},
		{"empty secret", Verifier{Secrets: [][]byte{cur, {}}}, body, onlyNew, ErrNoSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.v.Verify(tc.body, tc.header); !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	mac := strings.Repeat("ab", 32)
	for _, h := range []string{
		"abc",                                  // short hex
		strings.Repeat("zz", 32),               // not hex
		"t=1700000000",                         // no v1
		"v1=" + mac,                            // no t
		"t=1,t=2,v1=" + mac,                    // two timestamps
		"t=-1,v1=" + mac,                       // negative
		"t=+1,v1=" + mac,                       // not canonical
		"t=01,v1=" + mac,                       // not canonical
		"t=99999999999999999999,v1=" + mac,     // overflows
		"t=1,v1=" + mac[:63],                   // short MAC
		"t=1,v1",                               // no value
		"t=1,=x,v1=" + mac,                     // no key
		"t=1" + strings.Repeat(",v1="+mac, 16), // too many fields
	} {
		if _, err := Parse(h); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%.40q) = %v, want ErrMalformed", h, err)
		}
	}
}

func TestSignAtRefusesEmptySecrets(t *testing.T) {
	if _, err := SignAt(body, t0); !errors.Is(err, ErrNoSecret) {
		t.Error(err)
	}
	if _, err := SignAt(body, t0, secret, nil); !errors.Is(err, ErrNoSecret) {
		t.Error(err)
	}
}

// Errors never carry a secret or a MAC.
func TestErrorsHoldNothingSecret(t *testing.T) {
	sig, _ := SignAt(body, t0, secret)
	v := Verifier{Secrets: [][]byte{[]byte("other")}, Now: at(0)}
	err := v.Verify(body, sig)
	if err == nil || strings.Contains(err.Error(), "other") || strings.Contains(err.Error(), sig[15:]) {
		t.Fatalf("error %v", err)
	}
}

func FuzzParse(f *testing.F) {
	sig, _ := SignAt(body, t0, secret, []byte("two"))
	for _, s := range []string{sig, Sign(secret, body), "", "t=,v1=", "t=1,v1=" + strings.Repeat("0", 64), sig + ",v2=x,,"} {
		f.Add(s, []byte(`{"a":1}`))
	}
	f.Fuzz(func(t *testing.T, header string, payload []byte) {
		s, err := Parse(header)
		if err == nil {
			if len(s.V1) == 0 || (!s.Legacy && s.Timestamp < 0) {
				t.Fatalf("parsed %+v", s)
			}
			for _, m := range s.V1 {
				if len(m) != 32 {
					t.Fatalf("MAC of %d bytes", len(m))
				}
			}
		}
		v := Verifier{Secrets: [][]byte{secret}, AllowLegacy: true, Now: at(0)}
		if v.Verify(payload, header) == nil {
			// Only a real signature of this payload verifies.
			legacy := Sign(secret, payload)
			good, _ := SignAt(payload, time.Unix(s.Timestamp, 0), secret)
			if !strings.EqualFold(strings.TrimSpace(header), legacy) && !strings.Contains(strings.ToLower(strings.ReplaceAll(header, " ", "")), good[strings.Index(good, "v1="):]) {
				t.Fatalf("accepted a header that is no signature of the payload")
			}
		}
	})
}
