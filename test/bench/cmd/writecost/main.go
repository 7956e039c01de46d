// Command writecost measures what each kind of write the manager makes for a
// key costs the API server and etcd, in CPU per write, one kind at a time
// over as many keys, on a local control plane with informers like the
// manager's (and the fleet harness's) watching. It explains the fleet's floor
// (make bench): the writes a key needs, not the manager around them, set how
// fast a wave can be.
//
//	go run ./test/bench/cmd/writecost -assets bin/k8s/<version> -keys 5000 [-profiles DIR]
//
// -profiles saves a CPU profile of the API server during the first 5 s of
// each kind (go tool pprof), to see where a write's cost goes.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/controllers"
	"github.com/meterr/meterr-operator/internal/record"
)

func main() {
	assets := flag.String("assets", os.Getenv("KUBEBUILDER_ASSETS"), "Directory with etcd and kube-apiserver.")
	keys := flag.Int("keys", 5000, "Keys: writes of each kind.")
	workers := flag.Int("workers", 16, "Concurrent writes (the manager's default --max-concurrent-reconciles in make bench).")
	profiles := flag.String("profiles", "", "If set, a directory for a CPU profile of the API server during each kind of write (its first 5 s).")
	flag.Parse()
	if err := run(*assets, *keys, *workers, *profiles); err != nil {
		fmt.Fprintln(os.Stderr, "writecost:", err)
		os.Exit(1)
	}
}

func run(assets string, n, workers int, profiles string) error {
	env := &envtest.Environment{CRDDirectoryPaths: []string{"config/crd/bases"}, BinaryAssetsDirectory: assets, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl, err := client.New(cfg, client.Options{Scheme: authv1alpha1.Scheme})
	if err != nil {
		return err
	}
	const ns, recordsNS = "tenant", "meterr-system"
	for _, name := range []string{ns, recordsNS} {
		if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			return err
		}
	}
	if err := watch(ctx, cfg); err != nil {
		return err
	}
	cpu := cpuReader(cfg, env.ControlPlane.Etcd.URL.String())

	var rows [][3]float64
	var names []string
	measure := func(name string, op func(i int) error) error {
		a0, e0, err := cpu(ctx)
		if err != nil {
			return err
		}
		var wg sync.WaitGroup
		if profiles != "" {
			file := filepath.Join(profiles, fmt.Sprintf("apiserver-%02d.pprof", len(rows)))
			wg.Go(func() {
				if err := profile(ctx, cfg, file); err != nil {
					fmt.Fprintln(os.Stderr, "writecost: profile:", err)
				}
			})
		}
		var next atomic.Int64
		var first atomic.Value
		for range workers {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < n && first.Load() == nil; i = int(next.Add(1) - 1) {
					if err := op(i); err != nil {
						first.CompareAndSwap(nil, fmt.Errorf("%s: %w", name, err))
					}
				}
			})
		}
		wg.Wait()
		if err, _ := first.Load().(error); err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond) // the watchers' share of the last writes
		a1, e1, err := cpu(ctx)
		if err != nil {
			return err
		}
		names = append(names, name)
		rows = append(rows, [3]float64{(a1 - a0) * 1e3 / float64(n), (e1 - e0) * 1e3 / float64(n)})
		return nil
	}

	keyName := func(i int) string { return fmt.Sprintf("key-%05d", i) }
	mak := func(i int) *authv1alpha1.MeterrAPIKey {
		return &authv1alpha1.MeterrAPIKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyName(i)}}
	}
	recName := func(i int) string { return "mak-" + keyName(i) }
	owner := func(i int) map[string]string {
		return map[string]string{authv1alpha1.AnnotationOwner: ns + "/" + keyName(i)}
	}
	recordData := func(c byte) []byte { // the size of a record with two versions
		b := []byte(strings.Repeat("x", 700))
		b[0] = c
		return b
	}
	now := metav1.Now().UTC().Format(time.RFC3339)
	status := fmt.Sprintf(`{"status":{"observedGeneration":1,"conditions":[{"type":"Ready","status":"True","observedGeneration":1,`+
		`"lastTransitionTime":%q,"reason":"KeyReady","message":"the current key is recorded and delivered to Secret key"}],`+
		`"currentKey":{"id":"bc6883a0484c","hint":"mtr_live_JauW…","issuedAt":%[1]q,"rotatesAt":%[1]q},"secretName":"key"}}`, now)
	rotated := fmt.Sprintf(`{"status":{"observedGeneration":2,"currentKey":{"id":"d12a6c3336eb","issuedAt":%q},`+
		`"previousKeys":[{"id":"bc6883a0484c","hint":"mtr_live_JauW…","expiresAt":%[1]q}]}}`, now)
	applyRecord := func(i int, c byte) error {
		ac := applycorev1.Secret(recName(i), recordsNS).WithType(corev1.SecretTypeOpaque).WithLabels(record.Labels()).
			WithAnnotations(owner(i)).WithData(map[string][]byte{record.DataKey: recordData(c)})
		return cl.Apply(ctx, ac, client.FieldOwner(controllers.FieldManager), client.ForceOwnership)
	}
	steps := []struct {
		name string
		op   func(i int) error
	}{
		{"the harness: create MeterrAPIKey", func(i int) error {
			m := mak(i)
			m.Spec.Permissions = []authv1alpha1.Permission{authv1alpha1.PermissionRead}
			return cl.Create(ctx, m)
		}},
		{"new key: PATCH meterrapikeys (finalizer)", func(i int) error {
			return cl.Patch(ctx, mak(i), client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":["`+authv1alpha1.Finalizer+`"]}}`)))
		}},
		{"new key: POST secrets (record)", func(i int) error {
			return cl.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: recordsNS, Name: recName(i), Labels: record.Labels(),
				Annotations: owner(i)}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{record.DataKey: recordData('a')}},
				client.FieldOwner(controllers.FieldManager))
		}},
		{"new key: POST secrets (workload Secret)", func(i int) error {
			return cl.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyName(i),
				Labels: map[string]string{authv1alpha1.LabelManagedBy: authv1alpha1.ManagedByValue}},
				Type: corev1.SecretTypeOpaque, Data: map[string][]byte{authv1alpha1.DataKeyAPIKey: recordData('k')[:60]}},
				client.FieldOwner(controllers.FieldManager))
		}},
		{"new key: PATCH meterrapikeys/status", func(i int) error {
			return cl.Status().Patch(ctx, mak(i), client.RawPatch(types.MergePatchType, []byte(status)))
		}},
		{"the harness: PATCH meterrapikeys (requestedAt)", func(i int) error {
			return cl.Patch(ctx, mak(i), client.RawPatch(types.MergePatchType, []byte(`{"spec":{"rotation":{"requestedAt":"`+now+`"}}}`)))
		}},
		{"rotation: apply secrets (record, new version)", func(i int) error { return applyRecord(i, 'b') }},
		{"rotation: apply secrets (workload Secret)", func(i int) error {
			ac := applycorev1.Secret(keyName(i), ns).WithType(corev1.SecretTypeOpaque).
				WithLabels(map[string]string{authv1alpha1.LabelManagedBy: authv1alpha1.ManagedByValue}).
				WithData(map[string][]byte{authv1alpha1.DataKeyAPIKey: recordData('l')[:60]})
			return cl.Apply(ctx, ac, client.FieldOwner(controllers.FieldManager), client.ForceOwnership)
		}},
		{"rotation: apply secrets (record, old version's expiry)", func(i int) error { return applyRecord(i, 'c') }},
		{"rotation: PATCH meterrapikeys/status", func(i int) error {
			return cl.Status().Patch(ctx, mak(i), client.RawPatch(types.MergePatchType, []byte(rotated)))
		}},
		{"for scale: GET meterrapikeys (uncached read)", func(i int) error {
			return cl.Get(ctx, client.ObjectKeyFromObject(mak(i)), &authv1alpha1.MeterrAPIKey{})
		}},
	}
	for _, s := range steps {
		if err := measure(s.name, s.op); err != nil {
			return err
		}
	}
	base := rows[0][0] + rows[0][1]
	fmt.Printf("%d keys, %d concurrent writes; CPU per write:\n\n", n, workers)
	fmt.Println("| write | API server | etcd | both ÷ the harness's create |")
	fmt.Println("|---|---|---|---|")
	for i, r := range rows {
		fmt.Printf("| %s | %.2f ms | %.2f ms | %.2f |\n", names[i], r[0], r[1], (r[0]+r[1])/base)
	}
	return nil
}

// watch starts what watches a fleet: the manager's informers (its cache
// options: every MeterrAPIKey, the operator's Secrets as metadata) and the
// fleet harness's own informer of MeterrAPIKeys.
func watch(ctx context.Context, cfg *rest.Config) error {
	opts := controllers.CacheOptions()
	opts.Scheme = authv1alpha1.Scheme
	mgr, err := cache.New(cfg, opts)
	if err != nil {
		return err
	}
	harness, err := cache.New(cfg, cache.Options{Scheme: authv1alpha1.Scheme})
	if err != nil {
		return err
	}
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	for _, o := range []struct {
		c cache.Cache
		o client.Object
	}{{mgr, meta}, {mgr, &authv1alpha1.MeterrAPIKey{}}, {harness, &authv1alpha1.MeterrAPIKey{}}} {
		if _, err := o.c.GetInformer(ctx, o.o); err != nil {
			return err
		}
	}
	for _, c := range []cache.Cache{mgr, harness} {
		go func() { _ = c.Start(ctx) }()
		if !c.WaitForCacheSync(ctx) {
			return fmt.Errorf("informers did not sync")
		}
	}
	return nil
}

// profile writes a 5 s CPU profile of the API server to file.
func profile(ctx context.Context, cfg *rest.Config, file string) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	body, err := cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", "5").DoRaw(ctx)
	if err != nil {
		return err
	}
	return os.WriteFile(file, body, 0o600)
}

// cpuReader returns a reader of the API server's and etcd's
// process_cpu_seconds_total.
func cpuReader(cfg *rest.Config, etcdURL string) func(context.Context) (float64, float64, error) {
	return func(ctx context.Context) (float64, float64, error) {
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return 0, 0, err
		}
		body, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		if err != nil {
			return 0, 0, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, etcdURL+"/metrics", nil)
		if err != nil {
			return 0, 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, 0, err
		}
		defer func() { _ = resp.Body.Close() }()
		etcd, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, 0, err
		}
		a, err := cpuSeconds(string(body))
		if err != nil {
			return 0, 0, fmt.Errorf("API server: %w", err)
		}
		e, err := cpuSeconds(string(etcd))
		if err != nil {
			return 0, 0, fmt.Errorf("etcd: %w", err)
		}
		return a, e, nil
	}
}

func cpuSeconds(metrics string) (float64, error) {
	for l := range strings.Lines(metrics) {
		if v, ok := strings.CutPrefix(l, "process_cpu_seconds_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no process_cpu_seconds_total")
}
