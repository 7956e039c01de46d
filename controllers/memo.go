package controllers

// The reconciler's memory of its own writes. Every write this manager makes
// (the finalizer, the record, the workload Secret, the status) triggers a
// watch event and so another reconcile of the same key; without a memory
// that reconcile reads the record and the Secret again through the API
// server, which is most of what a key used to cost. With it:
//
//   - a record or workload Secret is read from the API server only when the
//     cache shows it at a resource version this manager did not write or read
//     (someone else changed it, or it was deleted), or when nothing is
//     remembered (a restart, another leader's keys);
//   - every write carries the resource version the decision was made on, so
//     a decision taken on a stale view fails with a conflict instead of
//     landing, and the key is read again: this is what the uncached reads
//     protected, kept by the API server itself;
//   - the first write of a record or a workload Secret is a create, which
//     fails if any object of that name exists (a foreign Secret the cache,
//     filtered by our label, cannot show).
//
// The workload Secret's plaintext key is never remembered: a write that
// needs it (a template change) reads the Secret again.

import (
	"errors"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/record"
)

// memoVersions is how many resource versions of one object are remembered:
// enough for the writes of one reconcile (a rotation writes the record
// twice) and the read before them.
const memoVersions = 4

// errStale marks a write refused because what it was decided on has
// changed (a conflict, or an object that already exists). The key is
// forgotten and reconciled again from what the API server holds; its status
// is left alone, since nothing is wrong with the key.
var errStale = errors.New("the object changed since it was read")

// objMemo is one Secret as this manager last wrote or read it, kept small:
// a manager holds one per key for its lifetime.
type objMemo struct {
	namespace, name string
	uid             types.UID
	typ             corev1.SecretType
	// labels and annotations are the operator's own (a workload Secret's
	// others are never kept), as key, value, key, value...: a slice costs a
	// fraction of a map, and these are never looked up.
	labels, annotations []string
	// data is a record's content; a workload Secret's data is never kept.
	data []byte
	// versions are the resource versions this manager wrote or read,
	// oldest first. The cache showing any of them means nobody else has
	// written since (the newest one here is at least as new).
	versions []string
	// created: this manager created the object, so the cache may not show
	// it yet; confirmed: the cache has shown one of versions since.
	created, confirmed bool
}

// keyMemo is what is remembered of one MeterrAPIKey.
type keyMemo struct {
	uid              types.UID
	record, workload *objMemo
	// wl is the workload as last read or written, without its key.
	wl workload
	// mak is the MeterrAPIKey as the last finalizer or status patch
	// returned it, and makVersions the versions this manager saw or
	// produced, oldest first.
	mak         *authv1alpha1.MeterrAPIKey
	makVersions []string
	// mustRead: a write was refused as stale; read both Secrets uncached
	// before deciding again, even if the cache shows neither.
	mustRead bool
}

// stale forgets the Secrets after a refused write.
func (k *keyMemo) stale() {
	k.record, k.workload, k.wl, k.mustRead = nil, nil, workload{}, true
}

// memory holds a keyMemo per MeterrAPIKey. Reconciles of one key never run
// concurrently, so an entry is only ever used by one goroutine at a time;
// the lock guards the map.
type memory struct {
	mu   sync.Mutex
	keys map[types.NamespacedName]*keyMemo
}

// get returns the entry of the key with this name and UID; one left by an
// earlier key of the same name is dropped.
func (m *memory) get(name types.NamespacedName, uid types.UID) *keyMemo {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys == nil {
		m.keys = map[types.NamespacedName]*keyMemo{}
	}
	k := m.keys[name]
	if k == nil || k.uid != uid {
		k = &keyMemo{uid: uid}
		m.keys[name] = k
	}
	return k
}

func (m *memory) forget(name types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, name)
}

func appendVersion(versions []string, rv string) []string {
	if rv == "" || slices.Contains(versions, rv) {
		return versions
	}
	versions = append(versions, rv)
	if len(versions) > memoVersions {
		versions = slices.Delete(versions, 0, len(versions)-memoVersions)
	}
	return versions
}

// remember records s as written (created tells whether by a create) or
// read: its identity, type, labels, annotations and record data.
func (o *objMemo) remember(s *corev1.Secret, created bool) *objMemo {
	if o == nil || (o.uid != s.UID && s.UID != "") {
		o = &objMemo{}
	}
	o.namespace, o.name, o.uid, o.typ = s.Namespace, s.Name, s.UID, s.Type
	o.labels, o.annotations = flatten(s.Labels), flatten(s.Annotations)
	o.data = nil
	if d, ok := s.Data[record.DataKey]; ok {
		o.data = slices.Clone(d)
	}
	o.versions = appendVersion(o.versions, s.ResourceVersion)
	o.created = o.created || created
	return o
}

// secret returns the remembered Secret at its newest version. A workload
// Secret comes with the managed-fields entry of the operator's apply (what
// ownedMetadata reads): the labels and annotations remembered are exactly
// the ones it owns.
func (o *objMemo) secret() *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: o.namespace, Name: o.name, UID: o.uid,
			Labels: unflatten(o.labels), Annotations: unflatten(o.annotations)},
		Type: o.typ,
	}
	if n := len(o.versions); n > 0 {
		s.ResourceVersion = o.versions[n-1]
	}
	if o.data != nil {
		s.Data = map[string][]byte{record.DataKey: slices.Clone(o.data)}
	} else {
		s.ManagedFields = []metav1.ManagedFieldsEntry{appliedEntry(s.Labels, s.Annotations)}
	}
	return s
}

func flatten(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, 2*len(m))
	for k, v := range m {
		out = append(out, k, v)
	}
	return out
}

func unflatten(kv []string) map[string]string {
	if len(kv) == 0 {
		return nil
	}
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// trusted reports whether the remembered object is what the API server
// holds, as far as the cache can tell: cached is the cache's metadata of it,
// nil when the cache does not show it.
func (o *objMemo) trusted(cached *metav1.PartialObjectMetadata) bool {
	if o == nil || o.uid == "" {
		return false
	}
	if cached == nil {
		// Not seen yet after our create; once seen, gone means deleted.
		return o.created && !o.confirmed
	}
	if cached.UID != o.uid || !slices.Contains(o.versions, cached.ResourceVersion) {
		return false
	}
	o.confirmed = true
	return true
}

// rememberWorkload keeps of s what applyWorkload and writeWorkload look at:
// never its data, and of its labels, annotations and managed fields only
// the operator's (a tenant may hang anything on its Secret, and the memory
// must not grow with it); and wl without its key.
func (k *keyMemo) rememberWorkload(s *corev1.Secret, wl workload, created bool) {
	ownedLabels, ownedAnnotations, _ := ownedMetadata(s, FieldManager)
	kept := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, UID: s.UID, ResourceVersion: s.ResourceVersion,
			Labels: onlyKeys(s.Labels, ownedLabels), Annotations: onlyKeys(s.Annotations, ownedAnnotations)},
		Type: s.Type,
	}
	k.workload = k.workload.remember(kept, created)
	wl.key = ""
	k.wl = wl
}

// rememberKey records mak as a write of this manager returned it.
func (k *keyMemo) rememberKey(mak *authv1alpha1.MeterrAPIKey, before string) {
	if k.mak != nil && k.mak.UID != mak.UID {
		k.makVersions = nil
	}
	k.makVersions = appendVersion(appendVersion(k.makVersions, before), mak.ResourceVersion)
	k.mak = mak.DeepCopy()
	// The cache drops managed fields too; only the rest is ever read.
	k.mak.ManagedFields = nil
}

// latest returns the MeterrAPIKey to reconcile: the cached one, or the one
// this manager's last write returned when the cache still shows a version
// from before that write (an earlier version this manager saw or produced:
// the write's response includes every change up to it).
func (k *keyMemo) latest(cached *authv1alpha1.MeterrAPIKey) *authv1alpha1.MeterrAPIKey {
	if k.mak == nil || k.mak.UID != cached.UID || !slices.Contains(k.makVersions, cached.ResourceVersion) {
		return cached
	}
	if cached.ResourceVersion == k.mak.ResourceVersion {
		// The cache has caught up: no need to hold a copy.
		k.mak = nil
		return cached
	}
	return k.mak.DeepCopy()
}
