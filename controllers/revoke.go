package controllers

// Revocation by the key itself: a key version reported leaked is marked
// revoked in the key record (which only the operator writes), refused by the
// auth servers from that write on, and, when it was the current key,
// replaced at once. See docs/secret-scanning.md.

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/record"
)

// Revocation sources; any other value is reported as "other" (in the
// metric) so a request cannot grow the metric's label set.
const (
	SourceCLI    = "cli"
	SourceGitLab = "gitlab"
	SourceGitHub = "github"
	sourceOther  = "other"

	// maxCompromised bounds status.compromisedKeys (the CRD's MaxItems).
	maxCompromised = 32
	// maxLocation bounds the location an Event shows.
	maxLocation = 256
)

// keysRevoked counts key versions revoked, by source; no key, id or owner
// in a label.
var keysRevoked = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "meterr_keys_revoked_total",
	Help: "API key versions reported leaked and revoked, by source (cli, gitlab, github, other). A revoked current key is also counted in meterr_keys_issued_total{reason=\"KeyCompromised\"}.",
}, []string{"source"})

func init() {
	metrics.Registry.MustRegister(keysRevoked)
}

func sourceLabel(s string) string {
	switch s {
	case SourceCLI, SourceGitLab, SourceGitHub:
		return s
	}
	return sourceOther
}

// revocation is one request read from an annotation.
type revocation struct {
	annotation string
	req        authv1alpha1.RevocationRequest
}

// revocationRequests reads the revocation request annotations of mak, in a
// stable order. An unreadable value is returned with an empty hash: it
// matches nothing and is removed.
func revocationRequests(mak *authv1alpha1.MeterrAPIKey) []revocation {
	var out []revocation
	for k, v := range mak.Annotations {
		if !strings.HasPrefix(k, authv1alpha1.AnnotationRevokePrefix) {
			continue
		}
		r := revocation{annotation: k}
		if err := json.Unmarshal([]byte(v), &r.req); err != nil {
			r.req = authv1alpha1.RevocationRequest{}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b revocation) int { return strings.Compare(a.annotation, b.annotation) })
	return out
}

// revoked is what applyRevocations did for one request.
type revoked struct {
	req revocation
	// index of the version in the record read; -1 when it names none.
	index int
	// id of that version.
	id string
	// fresh: this request revoked the version (it was not revoked before).
	fresh bool
	// wasCurrent: the version had no expiry (the key in the workload Secret).
	wasCurrent bool
}

// applyRevocations marks the versions the requests name as revoked at now:
// a revoked version's expiry becomes now (no overlap), and it is never
// un-revoked. It can only end validity: a request that names no version of
// rec changes nothing. rec is changed in place.
func applyRevocations(rec *record.Record, reqs []revocation, now time.Time) []revoked {
	out := make([]revoked, 0, len(reqs))
	at := metav1.NewTime(now.Truncate(time.Second))
	for _, q := range reqs {
		r := revoked{req: q, index: -1}
		if rec != nil && len(q.req.Hash) == 64 {
			for i := range rec.Keys {
				v := &rec.Keys[i]
				if subtle.ConstantTimeCompare([]byte(v.Hash), []byte(strings.ToLower(q.req.Hash))) != 1 {
					continue
				}
				r.index, r.id = i, v.ID
				if v.Revoked == nil {
					r.fresh = true
					r.wasCurrent = v.ExpiresAt == nil
					v.Revoked = &record.Revocation{At: at, Source: sourceLabel(q.req.Source)}
					if v.ExpiresAt == nil || at.Before(v.ExpiresAt) {
						exp := at
						v.ExpiresAt = &exp
					}
				}
				break
			}
		}
		out = append(out, r)
	}
	return out
}

// compromisedStatus is status.compromisedKeys: the entries already listed
// (a record's tombstones are dropped after their retention, the list
// stays) and every revoked version of rec, newest last, at most
// maxCompromised.
func compromisedStatus(prev []authv1alpha1.CompromisedKeyStatus, rec *record.Record) []authv1alpha1.CompromisedKeyStatus {
	out := slices.Clone(prev)
	if rec != nil {
		for _, v := range rec.Keys {
			if v.Revoked == nil || slices.ContainsFunc(out, func(c authv1alpha1.CompromisedKeyStatus) bool { return c.ID == v.ID }) {
				continue
			}
			out = append(out, authv1alpha1.CompromisedKeyStatus{ID: v.ID, ReportedAt: v.Revoked.At, Source: v.Revoked.Source})
		}
	}
	if len(out) > maxCompromised {
		out = out[len(out)-maxCompromised:]
	}
	return out
}

// isCompromised reports whether status lists the key id as compromised.
func isCompromised(mak *authv1alpha1.MeterrAPIKey, id string) bool {
	return slices.ContainsFunc(mak.Status.CompromisedKeys, func(c authv1alpha1.CompromisedKeyStatus) bool { return c.ID == id })
}

// printable keeps an Event's free text to one line of printable characters.
func printable(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}

// revocationEvents tells the owner, in Events, what the requests did. The
// replacement is the key issued in this reconcile, if any.
func (r *MeterrAPIKeyReconciler) revocationEvents(mak *authv1alpha1.MeterrAPIKey, done []revoked, replacement string) {
	for _, d := range done {
		switch {
		case d.index < 0:
			r.Recorder.Eventf(mak, nil, corev1.EventTypeWarning, authv1alpha1.ReasonRevocationIgnored, "Revoke",
				"revocation request %s from %s names no version of this key: ignored", d.req.annotation, printable(sourceLabel(d.req.req.Source), 16))
		default:
			where := printable(d.req.req.Location, maxLocation)
			if where == "" {
				where = "an unspecified location"
			}
			version := "a previous version; the current key stays valid"
			if d.wasCurrent {
				version = "the current key; replaced at once by key " + replacement + " in Secret " + secretName(mak)
			}
			if d.wasCurrent && replacement == "" {
				version = "the current key; its replacement is being issued"
			}
			r.Recorder.Eventf(mak, nil, corev1.EventTypeWarning, authv1alpha1.ReasonKeyCompromised, "Revoke",
				"key %s reported leaked by %s at %s: refused from now on (%s)", d.id, sourceLabel(d.req.req.Source), where, version)
			if d.fresh {
				keysRevoked.WithLabelValues(sourceLabel(d.req.req.Source)).Inc()
			}
		}
	}
}

// clearRevocationRequests removes the request annotations acted on, with a
// patch of those annotations alone, once the record holds the revocation.
func (r *MeterrAPIKeyReconciler) clearRevocationRequests(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, done []revoked) error {
	if len(done) == 0 {
		return nil
	}
	ann := map[string]any{}
	for _, d := range done {
		ann[d.req.annotation] = nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return err
	}
	obj := &authv1alpha1.MeterrAPIKey{ObjectMeta: metav1.ObjectMeta{Namespace: mak.Namespace, Name: mak.Name}}
	if err := r.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("removing revocation requests: %w", err)
	}
	for _, d := range done {
		delete(mak.Annotations, d.req.annotation)
	}
	return nil
}
