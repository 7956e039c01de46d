package cmd

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// metricsAuthFilter serves /metrics only to callers the API server
// authenticates (TokenReview of their bearer token) and authorizes
// (SubjectAccessReview of "get" on the non-resource URL), as
// controller-runtime's filters.WithAuthenticationAndAuthorization does. It
// is written against client-go alone: that filter pulls k8s.io/apiserver
// into the binary, whose init alone costs the auth server (the same binary)
// about 9 MiB of memory. Answers are cached by token digest, allowed ones
// for a minute and denied ones for ten seconds.
func metricsAuthFilter(cfg *rest.Config, hc *http.Client) (metricsserver.Filter, error) {
	cs, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("building the metrics authorization client: %w", err)
	}
	a := &metricsAuth{review: func(ctx context.Context, token, verb, path string) (int, string, error) {
		return reviewToken(ctx, cs, token, verb, path)
	}, now: time.Now, cache: map[[32]byte]cachedReview{}}
	return a.filter, nil
}

type cachedReview struct {
	status  int
	message string
	until   time.Time
}

type metricsAuth struct {
	review func(ctx context.Context, token, verb, path string) (status int, message string, err error)
	now    func() time.Time
	mu     sync.Mutex
	cache  map[[32]byte]cachedReview
}

func (a *metricsAuth) filter(log logr.Logger, next http.Handler) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		verb, path := strings.ToLower(r.Method), r.URL.Path
		key := sha256.Sum256([]byte(verb + " " + path + " " + token))
		a.mu.Lock()
		c, hit := a.cache[key]
		a.mu.Unlock()
		if !hit || a.now().After(c.until) {
			status, msg, err := a.review(r.Context(), token, verb, path)
			if err != nil {
				log.Error(err, "reviewing a metrics request")
				http.Error(w, "Authorization failed", http.StatusInternalServerError)
				return
			}
			ttl := 10 * time.Second
			if status == http.StatusOK {
				ttl = time.Minute
			}
			c = cachedReview{status: status, message: msg, until: a.now().Add(ttl)}
			a.mu.Lock()
			if len(a.cache) > 1000 { // bounded: tokens are the caller's to invent
				clear(a.cache)
			}
			a.cache[key] = c
			a.mu.Unlock()
		}
		if c.status != http.StatusOK {
			http.Error(w, c.message, c.status)
			return
		}
		next.ServeHTTP(w, r)
	}), nil
}

// reviewToken asks the API server who holds token and whether they may
// verb path: 200, or 401/403 with a message naming no secret.
func reviewToken(ctx context.Context, cs kubernetes.Interface, token, verb, path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr, err := cs.AuthenticationV1().TokenReviews().Create(ctx,
		&authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return 0, "", fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		return http.StatusUnauthorized, "Unauthorized", nil
	}
	u := tr.Status.User
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
		NonResourceAttributes: &authzv1.NonResourceAttributes{Path: path, Verb: verb},
	}}, metav1.CreateOptions{})
	if err != nil {
		return 0, "", fmt.Errorf("subject access review: %w", err)
	}
	if !sar.Status.Allowed {
		return http.StatusForbidden, "Authorization denied for user " + u.Username, nil
	}
	return http.StatusOK, "", nil
}
