package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	applymetav1 "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/controllers"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

// cpuSplit is the CPU time so far, in seconds, of each process a wave's
// work lands on. On a machine whose cores are all busy, a wave lasts about
// as long as their sum over the cores.
type cpuSplit struct{ apiServer, etcd, manager, harness float64 }

func (a cpuSplit) sub(b cpuSplit) cpuSplit {
	return cpuSplit{a.apiServer - b.apiServer, a.etcd - b.etcd, a.manager - b.manager, a.harness - b.harness}
}

func (a cpuSplit) perKey(n int) cpuSplit {
	f := 1 / float64(n)
	return cpuSplit{a.apiServer * f, a.etcd * f, a.manager * f, a.harness * f}
}

func (a cpuSplit) total() float64 { return a.apiServer + a.etcd + a.manager + a.harness }

// String shows a per-key split in milliseconds.
func (a cpuSplit) String() string {
	s := fmt.Sprintf("API server %.2f + etcd %.2f", a.apiServer*1e3, a.etcd*1e3)
	if a.manager > 0 {
		s += fmt.Sprintf(" + manager %.2f", a.manager*1e3)
	}
	return s + fmt.Sprintf(" + harness %.2f ms", a.harness*1e3)
}

// cpuNow reads the control plane's processes, the manager (pid 0: none)
// and the harness itself from /proc.
func (h *harness) cpuNow(managerPID int) cpuSplit {
	var c cpuSplit
	h.procs.mu.Lock()
	others := append([]int(nil), h.procs.others...)
	h.procs.mu.Unlock()
	secs := func(pid int) float64 {
		t, err := cpuTicks(pid)
		if err != nil {
			return 0
		}
		return float64(t) / clockTicks
	}
	for _, pid := range others {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		switch strings.TrimSpace(string(comm)) {
		case "etcd":
			c.etcd += secs(pid)
		case "kube-apiserver":
			c.apiServer += secs(pid)
		}
	}
	if managerPID > 0 {
		c.manager = secs(managerPID)
	}
	c.harness = secs(os.Getpid())
	return c
}

// replayWrites is the fleet's floor: before the manager starts, the harness
// itself makes, for each of as many keys as the fleet has, with as many
// workers as it creates the fleet with (each takes one key through all its
// writes; the manager runs its own number of reconciles), the writes the manager makes (of the same kinds, shapes and
// sizes, in the same order, each at the resource version of the one
// before), while informers like the manager's and the harness's own watch.
// Nothing is reconciled, generated or hashed per key. The fleet's time over
// the replay's is what the manager adds to its writes; the replay's over the
// write rate is what the writes themselves cost the API server.
func (h *harness) replayWrites(ctx context.Context, cfg *rest.Config, cl client.Client, ns, recordsNS string, st *fleetStats) error {
	c := h.cfg
	n := c.ctrlKeys
	scheme, err := newScheme()
	if err != nil {
		return err
	}
	opts := controllers.CacheOptions()
	opts.Scheme = scheme
	watchers, err := cache.New(cfg, opts)
	if err != nil {
		return err
	}
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if _, err := watchers.GetInformer(ctx, meta); err != nil {
		return err
	}
	if _, err := watchers.GetInformer(ctx, &authv1alpha1.MeterrAPIKey{}); err != nil {
		return err
	}
	// The harness's own informer, which follows the fleet to Ready.
	tracker, err := cache.New(cfg, cache.Options{Scheme: scheme, DefaultNamespaces: map[string]cache.Config{ns: {}}})
	if err != nil {
		return err
	}
	if _, err := tracker.GetInformer(ctx, &authv1alpha1.MeterrAPIKey{}); err != nil {
		return err
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = watchers.Start(wctx) }()
	go func() { _ = tracker.Start(wctx) }()
	if !watchers.WaitForCacheSync(ctx) || !tracker.WaitForCacheSync(ctx) {
		return fmt.Errorf("the replay's informers did not sync")
	}

	// One key's plaintext and hash stand for all: the replay measures the
	// API server, not key generation.
	key, err := apikey.Generate(apikey.EnvProduction)
	if err != nil {
		return err
	}
	hash := apikey.HashOf(key)
	gvk := authv1alpha1.GroupVersion.WithKind("MeterrAPIKey")
	type written struct {
		uid         types.UID
		recRV, wlRV string
		wlUID       types.UID
	}
	keys := make([]written, n)
	h.logf("the fleet's floor: the manager's writes for %d keys, replayed by the harness alone", n)

	at := metav1.NewTime(time.Now().Truncate(time.Second))
	rotates := metav1.NewTime(at.Add(90 * 24 * time.Hour))
	expires := metav1.NewTime(at.Add(7 * 24 * time.Hour))
	status := func(mak *authv1alpha1.MeterrAPIKey, gen int64, prev bool) {
		mak.Status = authv1alpha1.MeterrAPIKeyStatus{
			ObservedGeneration: gen,
			Conditions: []metav1.Condition{{Type: authv1alpha1.ConditionReady, Status: metav1.ConditionTrue, ObservedGeneration: gen,
				LastTransitionTime: at, Reason: "KeyReady", Message: "the current key is recorded and delivered to Secret " + mak.Name}},
			CurrentKey: &authv1alpha1.CurrentKeyStatus{ID: hash.ID(), Hint: apikey.Hint(key), IssuedAt: at, RotatesAt: &rotates},
			SecretName: mak.Name,
		}
		if prev {
			mak.Status.PreviousKeys = []authv1alpha1.PreviousKeyStatus{{ID: hash.ID(), Hint: apikey.Hint(key), ExpiresAt: expires}}
		}
	}
	recordData := func(mak *authv1alpha1.MeterrAPIKey, versions int, expire bool) ([]byte, error) {
		rec := &record.Record{FormatVersion: 1, Owner: record.Owner{Namespace: mak.Namespace, Name: mak.Name, UID: mak.UID},
			Policy: record.Policy{Permissions: []string{"read"}, Environment: apikey.EnvProduction, RequestsPerHour: 1000}}
		for range versions {
			rec.Keys = append(rec.Keys, record.NewVersionOf(key, hash, at.Time))
		}
		if expire {
			rec.Keys[0].ExpiresAt = &expires
		}
		return record.Encode(rec)
	}

	before := h.cpuNow(0)
	start := time.Now()
	if err := parallel(ctx, n, c.createWorkers, func(i int) error {
		mak := fleetKey(ns, i)
		if err := createRetry(ctx, func() error { return cl.Create(ctx, mak) }); err != nil {
			return err
		}
		// The finalizer: a merge patch of metadata at the resource version
		// read. A stand-in name, so that nothing waits for it at deletion.
		orig := mak.DeepCopy()
		mak.Finalizers = append(mak.Finalizers, "bench.meterr.ai/replay")
		if err := cl.Patch(ctx, mak, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return err
		}
		data, err := recordData(mak, 1, false)
		if err != nil {
			return err
		}
		rec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: recordsNS, Name: record.Name(mak.Namespace, mak.Name, mak.UID), Labels: record.Labels(),
				Annotations: map[string]string{authv1alpha1.AnnotationOwner: mak.Namespace + "/" + mak.Name}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{record.DataKey: data},
		}
		if err := cl.Create(ctx, rec, client.FieldOwner(controllers.FieldManager)); err != nil {
			return err
		}
		wl := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: mak.Name,
				Labels: map[string]string{authv1alpha1.LabelManagedBy: authv1alpha1.ManagedByValue},
				Annotations: map[string]string{authv1alpha1.AnnotationKeyID: hash.ID(),
					authv1alpha1.AnnotationIssuedAt: at.UTC().Format(time.RFC3339)},
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(mak, gvk)}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{authv1alpha1.DataKeyAPIKey: []byte(key), authv1alpha1.DataKeyEnv: []byte(key)},
		}
		if err := cl.Create(ctx, wl, client.FieldOwner(controllers.FieldManager)); err != nil {
			return err
		}
		orig = mak.DeepCopy()
		status(mak, mak.Generation, false)
		if err := cl.Status().Patch(ctx, mak, client.MergeFrom(orig)); err != nil {
			return err
		}
		keys[i] = written{uid: mak.UID, recRV: rec.ResourceVersion, wlRV: wl.ResourceVersion, wlUID: wl.UID}
		return nil
	}); err != nil {
		return err
	}
	st.replayCreate = time.Since(start)
	mid := h.cpuNow(0)
	st.replayCreateCPU = mid.sub(before).perKey(n)

	patch := []byte(fmt.Sprintf(`{"spec":{"rotation":{"requestedAt":%q}}}`, time.Now().UTC().Format(time.RFC3339)))
	start = time.Now()
	if err := parallel(ctx, n, c.createWorkers, func(i int) error {
		k := keys[i]
		mak := fleetKey(ns, i)
		if err := createRetry(ctx, func() error { return cl.Patch(ctx, mak, client.RawPatch(types.MergePatchType, patch)) }); err != nil {
			return err
		}
		recName := record.Name(mak.Namespace, mak.Name, k.uid)
		recApply := func(expire bool, rv string) (string, error) {
			data, err := recordData(mak, 2, expire)
			if err != nil {
				return "", err
			}
			ac := applycorev1.Secret(recName, recordsNS).WithType(corev1.SecretTypeOpaque).WithLabels(record.Labels()).
				WithAnnotations(map[string]string{authv1alpha1.AnnotationOwner: mak.Namespace + "/" + mak.Name}).
				WithData(map[string][]byte{record.DataKey: data}).WithResourceVersion(rv)
			if err := cl.Apply(ctx, ac, client.FieldOwner(controllers.FieldManager), client.ForceOwnership); err != nil {
				return "", err
			}
			return *ac.ResourceVersion, nil
		}
		rv, err := recApply(false, k.recRV)
		if err != nil {
			return fmt.Errorf("record: %w", err)
		}
		ac := applycorev1.Secret(mak.Name, ns).WithType(corev1.SecretTypeOpaque).
			WithLabels(map[string]string{authv1alpha1.LabelManagedBy: authv1alpha1.ManagedByValue}).
			WithAnnotations(map[string]string{authv1alpha1.AnnotationKeyID: hash.ID() + "x",
				authv1alpha1.AnnotationIssuedAt: at.UTC().Format(time.RFC3339)}).
			WithData(map[string][]byte{authv1alpha1.DataKeyAPIKey: []byte(key), authv1alpha1.DataKeyEnv: []byte(key)}).
			WithOwnerReferences(applymetav1.OwnerReference().WithAPIVersion(gvk.GroupVersion().String()).WithKind(gvk.Kind).
				WithName(mak.Name).WithUID(k.uid).WithController(true).WithBlockOwnerDeletion(true)).
			WithUID(k.wlUID).WithResourceVersion(k.wlRV)
		if err := cl.Apply(ctx, ac, client.FieldOwner(controllers.FieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("workload Secret: %w", err)
		}
		if _, err := recApply(true, rv); err != nil {
			return fmt.Errorf("record expiry: %w", err)
		}
		orig := mak.DeepCopy()
		status(mak, mak.Generation, true)
		return cl.Status().Patch(ctx, mak, client.MergeFrom(orig))
	}); err != nil {
		return err
	}
	st.replayRotate = time.Since(start)
	st.replayRotateCPU = h.cpuNow(0).sub(mid).perKey(n)
	h.logf("  created in %s, rotated in %s", st.replayCreate.Round(time.Millisecond), st.replayRotate.Round(time.Millisecond))

	// Clean up before the manager starts: it would take these for its own.
	stop()
	if err := parallel(ctx, n, c.createWorkers, func(i int) error {
		mak := fleetKey(ns, i)
		return client.IgnoreNotFound(cl.Patch(ctx, mak, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))))
	}); err != nil {
		return err
	}
	if err := cl.DeleteAllOf(ctx, &authv1alpha1.MeterrAPIKey{}, client.InNamespace(ns)); err != nil {
		return err
	}
	if err := cl.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(ns)); err != nil {
		return err
	}
	return cl.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(recordsNS))
}
