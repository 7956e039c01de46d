// Package usage is the wire format of the auth server's usage report (GET
// /v1/usage on its metrics port): the last accepted use of each key
// version, which the manager pulls from every replica and writes to
// status.currentKey.lastUsedAt and status.previousKeys[].lastUsedAt.
//
// The report is read-only and behind a bearer token both processes read
// from a file (--usage-token-file): the auth server gains no Kubernetes
// permission for it. See docs/architecture.md, "Last used".
package usage

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Path is the report's path on the auth server's metrics port.
const Path = "/v1/usage"

// maxReport bounds a report the manager reads: 100,000 versions of some
// 150 bytes each.
const maxReport = 64 << 20

// Report is one replica's answer.
type Report struct {
	// Now is the replica's clock (Unix seconds) when it listed: the
	// since of the next pull.
	Now int64 `json:"now"`
	// Versions are the versions last used at since or later.
	Versions []Version `json:"versions"`
}

// Version is the last accepted use of one key version.
type Version struct {
	// Namespace and Name are the MeterrAPIKey's, UID its UID: usage of a
	// key deleted and created again under the same name is not the new
	// key's.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	KeyID     string `json:"keyId"`
	// LastUsed is Unix seconds.
	LastUsed int64 `json:"lastUsed"`
}

// ReadToken reads a bearer token file: its content, surrounding space
// trimmed; an empty token is an error.
func ReadToken(path string) ([]byte, error) {
	b, err := os.ReadFile(path) //nolint:gosec // the path is the operator's flag
	if err != nil {
		return nil, err
	}
	t := []byte(strings.TrimSpace(string(b)))
	if len(t) == 0 {
		return nil, fmt.Errorf("usage token file %s is empty", path)
	}
	return t, nil
}

// Authorized reports whether r carries token as its bearer token, compared
// in constant time.
func Authorized(r *http.Request, token []byte) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && len(token) > 0 && subtle.ConstantTimeCompare([]byte(got), token) == 1
}

// Since reads the since query parameter: Unix seconds, 0 when absent.
func Since(r *http.Request) (int64, error) {
	s := r.URL.Query().Get("since")
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("since: want Unix seconds, got %q", s)
	}
	return v, nil
}

// Fetch pulls the report of the replica at base (scheme://host:port) of
// the versions used at since or later.
func Fetch(ctx context.Context, c *http.Client, base string, token []byte, since int64) (*Report, error) {
	u := base + Path + "?since=" + url.QueryEscape(strconv.FormatInt(since, 10))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("usage report from %s: HTTP %d", base, resp.StatusCode)
	}
	var rep Report
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxReport)).Decode(&rep); err != nil {
		return nil, fmt.Errorf("usage report from %s: %w", base, err)
	}
	return &rep, nil
}

// Time converts a report's seconds.
func Time(sec int64) time.Time { return time.Unix(sec, 0).UTC() }
