package controllers

// The decisions of a key's lifecycle, as pure functions of the MeterrAPIKey,
// what the cluster holds and the time. The reconciler only fetches, calls
// these and applies what they return.

import (
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

// Defaults applied when the API server has not filled them (objects written
// before a default existed, or the fake client in unit tests).
const (
	DefaultPeriod  = 2160 * time.Hour
	DefaultOverlap = 168 * time.Hour
)

// What one MeterrAPIKey may cost: every auth server replica holds every
// version of every record, so a tenant that rotates in a loop must not grow
// them without bound.
const (
	// MaxVersions caps a record's versions, tombstones included; the oldest
	// tombstones go first. Current and in-overlap versions are never dropped.
	MaxVersions = 16
	// MaxLiveVersions caps the versions that still work (the current one and
	// those in their overlap); a rotation that would exceed it waits until
	// the oldest overlap ends.
	MaxLiveVersions = 8
	// DefaultMinRotationInterval is the manager's --min-rotation-interval.
	DefaultMinRotationInterval = time.Minute
)

// workload is what the workload Secret holds, as far as a decision cares.
type workload struct {
	exists bool
	// owned: the Secret's controller reference is this MeterrAPIKey.
	owned bool
	// key is the plaintext under api-key when the Secret is intact: both
	// data keys hold the same well-formed key of the right environment;
	// hash is its SHA-256, computed once when the Secret is read.
	key    string
	hash   apikey.Hash
	intact bool
}

// decision says whether to issue a new key, and why.
type decision struct {
	issue   bool
	reason  string
	message string
	// drift marks a reason that means someone changed what we manage.
	drift bool
}

func period(mak *authv1alpha1.MeterrAPIKey) time.Duration {
	if p := mak.Spec.Rotation.Period; p != nil && p.Duration > 0 {
		return p.Duration
	}
	return DefaultPeriod
}

func overlap(mak *authv1alpha1.MeterrAPIKey) time.Duration {
	if o := mak.Spec.Rotation.Overlap; o != nil && o.Duration >= 0 {
		return o.Duration
	}
	return DefaultOverlap
}

func environment(mak *authv1alpha1.MeterrAPIKey) string {
	if mak.Spec.Environment == "" {
		return string(authv1alpha1.EnvironmentProduction)
	}
	return string(mak.Spec.Environment)
}

func secretName(mak *authv1alpha1.MeterrAPIKey) string {
	if mak.Spec.SecretName != "" {
		return mak.Spec.SecretName
	}
	return mak.Name
}

// expired reports whether spec.expiresAt has passed.
func expired(mak *authv1alpha1.MeterrAPIKey, now time.Time) bool {
	return mak.Spec.ExpiresAt != nil && !now.Before(mak.Spec.ExpiresAt.Time)
}

// findVersion returns the index of the version with this hash, or -1.
func findVersion(rec *record.Record, hash string) int {
	if rec == nil {
		return -1
	}
	return slices.IndexFunc(rec.Keys, func(v record.Version) bool { return v.Hash == hash })
}

// decideIssue answers "should a new key be issued now, and why?". The
// current key is the one in the workload Secret; it must be a live version of
// the record. A record that is missing altogether is rebuilt from the Secret
// (see rebuildRecord), so it does not cause a new key by itself.
func decideIssue(mak *authv1alpha1.MeterrAPIKey, rec *record.Record, wl workload, now time.Time) decision {
	if !wl.exists {
		switch {
		case mak.Status.CurrentKey == nil:
			return decision{issue: true, reason: authv1alpha1.ReasonIssued, message: "issued the first key"}
		case mak.Status.SecretName != "" && mak.Status.SecretName != secretName(mak):
			return decision{issue: true, reason: authv1alpha1.ReasonSecretRenamed,
				message: "spec.secretName changed: issued a new key into the new Secret; the previous key stays valid for the overlap"}
		default:
			return decision{issue: true, reason: authv1alpha1.ReasonSecretMissing, drift: true,
				message: "the workload Secret was deleted: issued a new key; the lost key stays valid for the overlap"}
		}
	}
	if !wl.intact {
		return decision{issue: true, reason: authv1alpha1.ReasonSecretModified, drift: true,
			message: "the workload Secret's key was edited: issued a new key; the previous key stays valid for the overlap"}
	}
	if rec == nil {
		// The record is gone and the key was not rebuilt into it: this
		// resource was never issued that key (see rebuildable).
		return decision{issue: true, reason: authv1alpha1.ReasonSecretModified, drift: true,
			message: "the workload Secret holds a key that was not issued to this MeterrAPIKey: issued a new key"}
	}
	{
		i := findVersion(rec, wl.hash.String())
		if i >= 0 && rec.Keys[i].Revoked != nil {
			return decision{issue: true, reason: authv1alpha1.ReasonKeyCompromised,
				message: "the current key was reported leaked: issued a new key at once; the reported key is refused from now on"}
		}
		if i < 0 || rec.Keys[i].ExpiresAt != nil {
			return decision{issue: true, reason: authv1alpha1.ReasonSecretModified, drift: true,
				message: "the workload Secret holds a key that is not the current one: issued a new key"}
		}
		if due := rotationSchedule(mak, rec.Keys[i].NotBefore.Time, now); due.due(now) {
			return decision{issue: true, reason: due.reason, message: due.message}
		}
	}
	return decision{}
}

// rotation is when the current key is next due, and why; the zero value
// means never (the key is disabled or expired).
type rotation struct {
	at      time.Time
	reason  string
	message string
}

func (r rotation) due(now time.Time) bool { return !r.at.IsZero() && !now.Before(r.at) }

// rotationSchedule is the one answer to "when is the current key, issued at
// issuedAt, rotated, and why": decideIssue, the status's rotatesAt and the
// requeue all use it. A requested rotation counts only when the key is older
// than the request, compared in whole seconds (status times are stored in
// seconds, and a pipeline's clock may be a little ahead of ours: a request
// from the future simply waits for its time).
func rotationSchedule(mak *authv1alpha1.MeterrAPIKey, issuedAt, now time.Time) rotation {
	if mak.Spec.Disabled || expired(mak, now) {
		return rotation{}
	}
	r := rotation{at: issuedAt.Add(period(mak)), reason: authv1alpha1.ReasonRotationDue, message: "rotation period elapsed: rotated the key"}
	if ra := mak.Spec.Rotation.RequestedAt; ra != nil && issuedAt.Unix() < ra.Unix() && ra.Time.Before(r.at) {
		r = rotation{at: ra.Time, reason: authv1alpha1.ReasonRotationRequested,
			message: "rotation.requestedAt " + ra.UTC().Format(time.RFC3339) + " reached: rotated the key"}
	}
	return r
}

// gate says until when a new key must wait, and why; the zero gate lets it
// through.
type gate struct {
	until time.Time
	why   string
}

func (g gate) delayed() bool { return !g.until.IsZero() }

// rotationGate applies the cost bounds to any new key but a first one: a
// requested rotation comes at least minInterval after the last key delivered
// (status.currentKey), and no new key makes more than MaxLiveVersions
// versions work at once. Drift repairs are not held to the interval: a
// workload whose Secret was deleted needs a key now.
func rotationGate(mak *authv1alpha1.MeterrAPIKey, rec *record.Record, reason string, minInterval time.Duration, now time.Time) gate {
	var g gate
	if c := mak.Status.CurrentKey; c != nil && minInterval > 0 && reason == authv1alpha1.ReasonRotationRequested {
		if next := c.IssuedAt.Add(minInterval); now.Before(next) {
			g = gate{until: next, why: "the last key was issued less than " + minInterval.String() + " ago (--min-rotation-interval)"}
		}
	}
	if rec == nil {
		return g
	}
	live := 0
	var firstEnd time.Time
	for _, v := range rec.Keys {
		if v.Expired(now) {
			continue
		}
		live++
		if v.ExpiresAt != nil && (firstEnd.IsZero() || v.ExpiresAt.Time.Before(firstEnd)) {
			firstEnd = v.ExpiresAt.Time
		}
	}
	if live >= MaxLiveVersions && !firstEnd.IsZero() && firstEnd.After(g.until) {
		g = gate{until: firstEnd, why: fmt.Sprintf("%d versions of the key still work (at most %d at once)", live, MaxLiveVersions)}
	}
	return g
}

// policyFor is the record policy a spec asks for.
func policyFor(mak *authv1alpha1.MeterrAPIKey) record.Policy {
	p := record.Policy{
		Environment: environment(mak),
		Disabled:    mak.Spec.Disabled,
		ExpiresAt:   mak.Spec.ExpiresAt.DeepCopy(),
	}
	for _, perm := range mak.Spec.Permissions {
		p.Permissions = append(p.Permissions, string(perm))
	}
	slices.Sort(p.Permissions)
	tier := mak.Spec.RateLimit.Tier
	if tier == "" {
		tier = authv1alpha1.TierStandard
	}
	p.RequestsPerHour = tier.RequestsPerHour()
	if rph := mak.Spec.RateLimit.RequestsPerHour; rph != nil {
		p.RequestsPerHour = *rph
	}
	if r := mak.Spec.Restrictions; r != nil {
		for _, ip := range r.IPAllowlist {
			p.IPAllowlist = append(p.IPAllowlist, string(ip))
		}
		for _, d := range r.Domains {
			p.Domains = append(p.Domains, string(d))
		}
	}
	return p
}

// settleVersions brings a record's versions in line with the current key:
// versions written before it that have no expiry yet get one (the moment the
// current key was delivered plus the overlap); versions written after it
// without an expiry were never delivered (a crash between writing the record
// and the Secret) and are dropped; tombstones past their retention are
// dropped, and beyond MaxVersions the oldest tombstones too. current < 0
// means no key is delivered: nothing is expired then.
func settleVersions(versions []record.Version, current int, overlap, retention time.Duration, now time.Time) []record.Version {
	out := make([]record.Version, 0, len(versions))
	for i, v := range versions {
		switch {
		case current >= 0 && i < current && v.ExpiresAt == nil:
			exp := metav1.NewTime(versions[current].NotBefore.Add(overlap))
			v.ExpiresAt = &exp
		case current >= 0 && i > current && v.ExpiresAt == nil:
			continue
		}
		if v.ExpiresAt != nil && !now.Before(v.ExpiresAt.Add(retention)) {
			continue
		}
		out = append(out, v)
	}
	// Over the cap, the oldest tombstones go first (versions are kept in
	// the order they were issued).
	for excess := len(out) - MaxVersions; excess > 0; {
		i := slices.IndexFunc(out, func(v record.Version) bool { return v.Expired(now) })
		if i < 0 {
			break
		}
		out = slices.Delete(out, i, i+1)
		excess--
	}
	return out
}

// dropUndelivered leaves out, before a new key is added, the versions that
// were written to the record but never reached the workload Secret (a crash
// between the two writes): they have no expiry and are neither the key the
// Secret holds (deliveredHash) nor the last one the status reported
// delivered. Kept, they would be given the overlap like a real previous key
// and work for days although no workload ever had them.
func dropUndelivered(versions []record.Version, deliveredHash string, cur *authv1alpha1.CurrentKeyStatus) []record.Version {
	out := make([]record.Version, 0, len(versions)+1)
	for _, v := range versions {
		if v.ExpiresAt == nil && v.Hash != deliveredHash && (cur == nil || v.ID != cur.ID) {
			continue
		}
		out = append(out, v)
	}
	return out
}

// statusFor derives the key part of the status from the record.
func statusFor(mak *authv1alpha1.MeterrAPIKey, rec *record.Record, currentHash string, now time.Time) (*authv1alpha1.CurrentKeyStatus, []authv1alpha1.PreviousKeyStatus) {
	var cur *authv1alpha1.CurrentKeyStatus
	var prev []authv1alpha1.PreviousKeyStatus
	for _, v := range rec.Keys {
		switch {
		case v.Hash == currentHash:
			cur = &authv1alpha1.CurrentKeyStatus{ID: v.ID, Hint: v.Hint, IssuedAt: v.NotBefore, LastUsedAt: lastUsedOf(mak, v.ID)}
			if r := rotationSchedule(mak, v.NotBefore.Time, now); !r.at.IsZero() {
				at := metav1.NewTime(r.at)
				cur.RotatesAt = &at
			}
		case v.ExpiresAt != nil && now.Before(v.ExpiresAt.Time):
			prev = append(prev, authv1alpha1.PreviousKeyStatus{ID: v.ID, Hint: v.Hint, ExpiresAt: *v.ExpiresAt,
				LastUsedAt: lastUsedOf(mak, v.ID)})
		}
	}
	return cur, prev
}

// lastUsedOf is the lastUsedAt the status holds for version id, wherever it
// is listed: a version keeps its last use when it goes from current to
// previous (the usage writer, usage.go, owns the value).
func lastUsedOf(mak *authv1alpha1.MeterrAPIKey, id string) *metav1.Time {
	if c := mak.Status.CurrentKey; c != nil && c.ID == id && c.LastUsedAt != nil {
		return c.LastUsedAt.DeepCopy()
	}
	for i := range mak.Status.PreviousKeys {
		if p := &mak.Status.PreviousKeys[i]; p.ID == id && p.LastUsedAt != nil {
			return p.LastUsedAt.DeepCopy()
		}
	}
	return nil
}

// nextDeadline is the earliest future moment at which something about this
// key changes by the clock alone: a rotation, a requested rotation, the end
// of an overlap, a tombstone's removal, the key's expiry. Zero means none.
func nextDeadline(mak *authv1alpha1.MeterrAPIKey, rec *record.Record, currentHash string, retention time.Duration, now time.Time) time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if mak.Spec.ExpiresAt != nil {
		consider(mak.Spec.ExpiresAt.Time)
	}
	if rec == nil {
		return next
	}
	for _, v := range rec.Keys {
		if v.Hash == currentHash {
			consider(rotationSchedule(mak, v.NotBefore.Time, now).at)
			continue
		}
		if v.ExpiresAt != nil {
			consider(v.ExpiresAt.Time)
			consider(v.ExpiresAt.Add(retention))
		}
	}
	return next
}
