package records

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// Secrets lists and watches the Secrets of one namespace: all that the auth
// server asks of the API server. client-go's typed Secrets client (and its
// fake, in tests) satisfies it.
type Secrets interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.SecretList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// NewSecrets returns the Secrets of namespace over cfg: the requests of
// client-go's typed Secrets client (protobuf preferred), made by a REST
// client whose scheme knows core/v1 alone. The typed client lives in a
// package that links every built-in API group and builds a scheme of all of
// them at start-up; in the auth server that alone kept about 10 MiB of the
// binary's pages resident (docs/architecture.md, "Memory of the auth
// server").
func NewSecrets(cfg *rest.Config, namespace string) (Secrets, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.APIPath = "/api"
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("building the Kubernetes client: %w", err)
	}
	return &secrets{rc: rc, namespace: namespace, params: runtime.NewParameterCodec(scheme)}, nil
}

type secrets struct {
	rc        rest.Interface
	namespace string
	params    runtime.ParameterCodec
}

func (s *secrets) List(ctx context.Context, opts metav1.ListOptions) (*corev1.SecretList, error) {
	var timeout time.Duration
	if opts.TimeoutSeconds != nil {
		timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
	}
	list := &corev1.SecretList{}
	err := s.rc.Get().UseProtobufAsDefault().Namespace(s.namespace).Resource("secrets").
		VersionedParams(&opts, s.params).Timeout(timeout).Do(ctx).Into(list)
	return list, err
}

func (s *secrets) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	var timeout time.Duration
	if opts.TimeoutSeconds != nil {
		timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
	}
	opts.Watch = true
	return s.rc.Get().UseProtobufAsDefault().Namespace(s.namespace).Resource("secrets").
		VersionedParams(&opts, s.params).Timeout(timeout).Watch(ctx)
}
