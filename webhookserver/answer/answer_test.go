package answer

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `quo"te`, `back\slash`, "new\nline\r\t", "\x00\x01\x1f\x7f", "<a>&b", "\u2028\u2029",
		"héllo wörld ✓ 🎉", "bad \xff\xfe utf8", "\xed\xa0\x80"} {
		want, _ := json.Marshal(s)
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("%q: invalid JSON %s: %v", s, got, err)
			continue
		}
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("%q: decodes to %q, encoding/json's to %q", s, back, wantBack)
		}
	}
}

func TestErrorBodies(t *testing.T) {
	for c := authz.InvalidAPIKey; c < authz.NumCodes; c++ {
		var body struct {
			Error map[string]string `json:"error"`
		}
		if err := json.Unmarshal(ErrorBody(c, "m"), &body); err != nil {
			t.Fatal(err)
		}
		if body.Error["code"] != c.String() || body.Error["type"] == "" || body.Error["message"] != "m" || len(body.Error) != 3 {
			t.Errorf("%s: %v", c, body.Error)
		}
	}
	for m := authz.Permission(1); m <= authz.Read|authz.Write|authz.Admin; m++ {
		if !strings.Contains(string(bodyInsufficient[m]), m.String()) {
			t.Errorf("insufficient body for %s: %s", m, bodyInsufficient[m])
		}
	}
}
