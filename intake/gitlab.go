package intake

// GitLab's Token Revocation API, as GitLab documents it for self-managed
// instances: GitLab sends its pre-shared token as the whole Authorization
// header (no scheme), asks GET /v1/revocable_token_types for the types we
// revoke, and POSTs [{type, token, location}] to /v1/revoke_tokens,
// expecting 204 once every token is accepted for revocation, 400 for a body
// it must not retry and 429 to retry later.

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

const sourceGitLab = "gitlab"

// gitlabToken is one entry of a revoke_tokens body.
type gitlabToken struct {
	Type     string `json:"type"`
	Token    string `json:"token"`
	Location string `json:"location"`
}

// ParseGitLab reads a revoke_tokens body: a JSON array of {type, token,
// location}. Entries of other types are an error, as GitLab documents (400,
// not retried); so are more than maxTokens entries.
func ParseGitLab(body []byte, maxTokens int) ([]Report, error) {
	var in []gitlabToken
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&in); err != nil {
		return nil, errInvalid("the body is not a JSON array of {type, token, location}")
	}
	if dec.More() {
		return nil, errInvalid("the body holds more than one JSON value")
	}
	if len(in) > maxTokens {
		return nil, errInvalid("more tokens than one request may carry")
	}
	out := make([]Report, 0, len(in))
	for _, t := range in {
		if t.Type != GitLabTokenType {
			return nil, errInvalid("unsupported token type; GET " + PathGitLabTypes + " lists the supported ones")
		}
		out = append(out, Report{Token: t.Token, Location: t.Location})
	}
	return out, nil
}

// gitlabAuthorized compares the Authorization header with the token in
// constant time (over their SHA-256, so not even the length leaks). GitLab
// sends the bare token; "Bearer <token>" is accepted too.
func (s *Server) gitlabAuthorized(r *http.Request) bool {
	want, err := s.o.GitLabToken()
	if err != nil || len(bytes.TrimSpace(want)) == 0 {
		if err != nil {
			s.o.Log.Error(err, "reading the GitLab intake's token; refusing every request")
		}
		return false
	}
	got := r.Header.Get("Authorization")
	if len(got) > 7 && strings.EqualFold(got[:7], "bearer ") {
		got = got[7:]
	}
	a, b := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256(bytes.TrimSpace(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// gitlabAdmit answers a request GitLab's API refuses before reading it (rate,
// method, token) and says whether to go on.
func (s *Server) gitlabAdmit(w http.ResponseWriter, r *http.Request, method string) bool {
	if !s.allow(w, sourceGitLab) {
		return false
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		s.fail(w, sourceGitLab, http.StatusMethodNotAllowed, "method_not_allowed", "use "+method)
		return false
	}
	if !s.gitlabAuthorized(r) {
		s.fail(w, sourceGitLab, http.StatusUnauthorized, "unauthorized", "missing or wrong token in Authorization")
		return false
	}
	return true
}

func (s *Server) gitlabTypes(w http.ResponseWriter, r *http.Request) {
	if !s.gitlabAdmit(w, r, http.MethodGet) {
		return
	}
	s.writeJSON(w, sourceGitLab, http.StatusOK, map[string][]string{"types": {GitLabTokenType}})
}

func (s *Server) gitlabRevoke(w http.ResponseWriter, r *http.Request) {
	if !s.gitlabAdmit(w, r, http.MethodPost) {
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.bodyError(w, sourceGitLab, err)
		return
	}
	reports, err := ParseGitLab(body, s.o.MaxTokens)
	if err != nil {
		s.fail(w, sourceGitLab, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	out, err := s.revoke(r, sourceGitLab, reports)
	if err != nil {
		// GitLab retries a 500; revocation is idempotent.
		s.o.Log.Error(err, "GitLab intake: filing revocations")
		s.fail(w, sourceGitLab, http.StatusInternalServerError, "internal_error", "the revocations could not be filed; retry")
		return
	}
	revoked, already, notOurs := s.count(sourceGitLab, out)
	s.o.Log.Info("GitLab intake", "tokens", len(reports), "revoked", revoked, "alreadyRevoked", already, "notOurs", notOurs)
	s.requests.WithLabelValues(sourceGitLab, "204").Inc()
	w.WriteHeader(http.StatusNoContent)
}

type invalidError string

func (e invalidError) Error() string { return string(e) }

func errInvalid(msg string) error { return invalidError(msg) }
