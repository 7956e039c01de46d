package records

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/meterr/meterr-operator/internal/record"
)

// Watcher keeps a Store current with the key records of one namespace.
type Watcher struct {
	store     *Store
	reflector *cache.Reflector
}

// NewWatcher watches only key records (record.Selector) among secrets (those
// of one namespace: NewSecrets). A reflector feeds the store directly: no
// informer store keeps a copy of every Secret (for 100,000 records that copy
// alone is about 200 MB of heap).
func NewWatcher(secrets Secrets, store *Store) *Watcher {
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, lo metav1.ListOptions) (runtime.Object, error) {
			lo.LabelSelector = record.Selector
			return secrets.List(ctx, lo)
		},
		WatchFuncWithContext: func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
			lo.LabelSelector = record.Selector
			return secrets.Watch(ctx, lo)
		},
	}, secrets)
	return &Watcher{store: store,
		reflector: cache.NewReflectorWithOptions(lw, &corev1.Secret{}, store, cache.ReflectorOptions{Name: "key-records"})}
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) { w.reflector.RunWithContext(ctx) }

// WaitLoaded waits until the first full list is in the store and the
// reflector has let go of it (it records the list's version right after
// Replace returns), so that a collection then frees the list; it reports
// false if ctx ended first. The second wait is bounded: readiness must not
// hang on a detail of client-go.
func (w *Watcher) WaitLoaded(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-w.store.Synced():
	}
	for deadline := time.Now().Add(2 * time.Second); w.reflector.LastSyncResourceVersion() == "" && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
	return true
}
