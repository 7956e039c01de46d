package records

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/quota"
	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/internal/record/recordtest"
	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
)

const ns = "meterr-system"

var t0 = time.Date(2025, 1, 15, 11, 30, 0, 0, time.UTC)

// sink is a Sink in a map. upsertErr, when set, is what Upsert returns for
// a record (after installing it, as the index does).
type sink struct {
	mu        sync.Mutex
	recs      map[string]*record.Record
	upsertErr func(name string) error
}

func newSink() *sink { return &sink{recs: map[string]*record.Record{}} }

func (s *sink) Upsert(name string, r *record.Record, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs[name] = r
	if s.upsertErr != nil {
		return s.upsertErr(name)
	}
	return nil
}

func (s *sink) Delete(name string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[name]
	if !ok {
		return "", false
	}
	delete(s.recs, name)
	return string(r.Owner.UID), true
}

func (s *sink) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.recs {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (s *sink) has(name string) bool { return slices.Contains(s.Names(), name) }

func newKey(t *testing.T) string { return recordtest.Key(t, apikey.EnvProduction) }

// secret returns the record Secret of owner team-a/owner with one key.
func secret(t *testing.T, owner string) *corev1.Secret {
	t.Helper()
	r := recordtest.New(owner, record.Policy{Permissions: []string{"read"}, RequestsPerHour: 10}, t0, newKey(t))
	data, err := record.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: record.Name(r.Owner.Namespace, r.Owner.Name, r.Owner.UID),
			Labels: record.Labels()},
		Data: map[string][]byte{record.DataKey: data},
	}
}

func newStore(t *testing.T, s Sink, lim Forgetter, log logr.Logger) *Store {
	t.Helper()
	st, err := NewStore(Config{Sink: s, Limiter: lim, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A relist (after a watch expired) replaces the whole sink: a record deleted
// while no watch was open must stop working, and its quota is dropped.
func TestReplaceDropsVanishedRecords(t *testing.T) {
	snk, lim := newSink(), ratelimit.NewMemory()
	st := newStore(t, snk, lim, logr.Discard())
	a, b := secret(t, "a"), secret(t, "b")
	if err := st.Replace([]any{a, b}, "1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.Synced():
	default:
		t.Fatal("the first full list did not mark the store synced")
	}
	if _, _, ok := lim.Take(context.Background(), quota.Named("uid-b"), quota.PerHour(1), t0); !ok {
		t.Fatal("spending b's quota failed")
	}
	if err := st.Replace([]any{a}, "2"); err != nil {
		t.Fatal(err)
	}
	if !snk.has(a.Name) {
		t.Fatal("a record still listed was dropped")
	}
	if snk.has(b.Name) {
		t.Fatal("a record missing from the relist is still installed")
	}
	if remaining, _ := lim.Peek(context.Background(), quota.Named("uid-b"), quota.PerHour(1), t0); remaining != 1 {
		t.Fatal("the vanished record's quota was kept")
	}
}

// The initial list (or a relist) streams through the reflector's temporary
// store, which applies the store's transformer: each record is installed as
// it arrives and the temporary store keeps only its name; a record that
// cannot be read fails closed at once; Replace then drops the records the
// list lacks.
func TestStreamedList(t *testing.T) {
	snk := newSink()
	st := newStore(t, snk, ratelimit.NewMemory(), logr.Discard())
	a, b, c := secret(t, "a"), secret(t, "b"), secret(t, "c")
	if err := st.Replace([]any{b, c}, "1"); err != nil {
		t.Fatal(err)
	}
	if !snk.has(b.Name) {
		t.Fatal("b not loaded")
	}
	b.Data[record.DataKey] = []byte("{not json")

	tmp := cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc, cache.WithTransformer(st.Transformer()))
	for _, s := range []*corev1.Secret{a, b} {
		if err := tmp.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	if !snk.has(a.Name) {
		t.Fatal("a streamed record is not installed as it arrives")
	}
	if snk.has(b.Name) {
		t.Fatal("a record that no longer decodes is still installed")
	}
	if got := testutil.ToFloat64(st.errors); got != 1 {
		t.Fatalf("record errors %v, want 1", got)
	}
	for _, obj := range tmp.List() {
		if _, ok := obj.(*streamedRecord); !ok {
			t.Fatalf("the temporary store kept a %T, not just the name", obj)
		}
	}
	if _, err := cache.MetaNamespaceKeyFunc(tmp.List()[0]); err != nil {
		t.Fatal(err)
	}
	if err := st.Replace(tmp.List(), "2"); err != nil {
		t.Fatal(err)
	}
	if !snk.has(a.Name) {
		t.Fatal("a dropped by Replace")
	}
	if snk.has(c.Name) {
		t.Fatal("c, missing from the relist, is still installed")
	}
}

// Events: an update that no longer decodes fails closed but keeps the quota
// (the record will most likely be readable again); a deletion, seen or only
// inferred (DeletedFinalStateUnknown), drops the record and its quota; a
// record the sink installs with problems is counted and logged by name.
func TestEvents(t *testing.T) {
	snk, lim := newSink(), ratelimit.NewMemory()
	var logs strings.Builder
	log := funcr.New(func(prefix, args string) { logs.WriteString(prefix + " " + args + "\n") }, funcr.Options{})
	st := newStore(t, snk, lim, log)
	ctx := context.Background()
	a, b := secret(t, "a"), secret(t, "b")
	for _, s := range []*corev1.Secret{a, b} {
		if err := st.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	lim.Take(ctx, quota.Named("uid-a"), quota.PerHour(10), t0)
	lim.Take(ctx, quota.Named("uid-b"), quota.PerHour(10), t0)

	broken := a.DeepCopy()
	broken.Data[record.DataKey] = []byte(`{"formatVersion":99}`)
	_ = st.Update(broken)
	if snk.has(a.Name) {
		t.Fatal("a record that no longer decodes is still installed")
	}
	if rem, _ := lim.Peek(ctx, quota.Named("uid-a"), quota.PerHour(10), t0); rem != 9 {
		t.Fatalf("an unreadable record's quota was dropped: remaining %d", rem)
	}
	_ = st.Update(a)
	if !snk.has(a.Name) {
		t.Fatal("a readable update is not installed")
	}

	_ = st.Delete(a)
	_ = st.Delete(cache.DeletedFinalStateUnknown{Key: ns + "/" + b.Name, Obj: b})
	if len(snk.Names()) != 0 {
		t.Fatalf("deleted records remain: %v", snk.Names())
	}
	for _, id := range []string{"uid-a", "uid-b"} {
		if rem, _ := lim.Peek(ctx, quota.Named(id), quota.PerHour(10), t0); rem != 10 {
			t.Fatalf("%s: a deleted record's quota was kept (remaining %d)", id, rem)
		}
	}

	snk.upsertErr = func(name string) error { return errors.New("key record " + name + ": something ignored") }
	_ = st.Add(b)
	if !snk.has(b.Name) {
		t.Fatal("a record with problems is not installed")
	}
	if got := testutil.ToFloat64(st.errors); got != 2 {
		t.Fatalf("record errors %v, want 2 (one undecodable, one with problems)", got)
	}
	if out := logs.String(); !strings.Contains(out, "skipping key record") || !strings.Contains(out, "something ignored") ||
		!strings.Contains(out, b.Name) || !strings.Contains(out, "team-a/b") {
		t.Errorf("problems not logged with the record and owner:\n%s", out)
	}
}

func TestNewStoreRegistersItsMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewStore(Config{Sink: newSink(), Limiter: ratelimit.NewMemory(), Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "meterr_auth_record_errors_total"); err != nil || n != 1 {
		t.Fatalf("meterr_auth_record_errors_total: %d %v", n, err)
	}
	if _, err := NewStore(Config{Sink: newSink(), Limiter: ratelimit.NewMemory(), Registerer: reg}); err == nil {
		t.Fatal("a second registration succeeded")
	}
}

// The watcher loads the records of its namespace, only those, and follows
// changes; WaitLoaded returns once the first list is in.
func TestWatcher(t *testing.T) {
	a, other := secret(t, "a"), secret(t, "other")
	other.Namespace = "default"
	unlabelled := secret(t, "unlabelled")
	unlabelled.Labels = nil
	cs := fake.NewClientset(a, other, unlabelled)
	// The fake API server has no watch history: changes made before the
	// watch starts would be missed, so the test waits for it.
	watching := make(chan struct{})
	var once sync.Once
	cs.PrependWatchReactor("secrets", func(act k8stesting.Action) (bool, watch.Interface, error) {
		w, err := cs.Tracker().Watch(act.GetResource(), act.GetNamespace())
		once.Do(func() { close(watching) })
		return true, w, err
	})
	snk := newSink()
	st := newStore(t, snk, ratelimit.NewMemory(), logr.Discard())
	w := NewWatcher(noWatchList{cs.CoreV1().Secrets(ns)}, st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	if !w.WaitLoaded(ctx) {
		t.Fatal("WaitLoaded returned false")
	}
	if got := snk.Names(); !slices.Equal(got, []string{a.Name}) {
		t.Fatalf("loaded %v, want only %s", got, a.Name)
	}
	select {
	case <-watching:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher does not watch")
	}
	b := secret(t, "b")
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Secrets(ns).Delete(ctx, a.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !slices.Equal(snk.Names(), []string{b.Name}); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after a create and a delete: %v", snk.Names())
		}
	}
}

// noWatchList are a fake clientset's Secrets, which (unlike an API server)
// cannot stream a list as a watch.
type noWatchList struct{ Secrets }

func (noWatchList) IsWatchListSemanticsUnSupported() bool { return true }
