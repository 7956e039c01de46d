package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/meterr/meterr-operator/intake"
	"github.com/meterr/meterr-operator/internal/revocation"
)

// IntakeOptions are the manager's flags for the secret-scanning intakes
// (docs/secret-scanning.md). Both intakes are off by default.
type IntakeOptions struct {
	Listen          string
	GitLabTokenFile string
	GitHubKeysFile  string
	Rate            float64
	Burst           int
	MaxBodyBytes    int64
}

// AddFlags registers the intake flags.
func (o *IntakeOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Listen, "leak-intake-listen", "", "Address of the secret-scanning intakes (GitLab Token Revocation API, GitHub secret scanning); empty: off. Put TLS in front of it (an Ingress or Gateway).")
	fs.StringVar(&o.GitLabTokenFile, "gitlab-revocation-token-file", "", "File holding the token GitLab sends in Authorization (a mounted Secret); set: serve GET /v1/revocable_token_types and POST /v1/revoke_tokens.")
	fs.StringVar(&o.GitHubKeysFile, "github-public-keys-file", "", "File holding GitHub's secret scanning public keys, GitHub's {\"public_keys\": [...]} JSON (a mounted ConfigMap); set: serve POST /v1/leaks/github.")
	fs.Float64Var(&o.Rate, "leak-intake-rate", intake.DefaultRate, "Requests per second the intakes accept together (429 beyond), counted before authentication.")
	fs.IntVar(&o.Burst, "leak-intake-burst", intake.DefaultBurst, "Burst of requests the intakes accept together.")
	fs.Int64Var(&o.MaxBodyBytes, "leak-intake-max-body-bytes", intake.DefaultMaxBodyBytes, "Largest request body the intakes read (413 beyond).")
}

// Validate checks the intake flags.
func (o *IntakeOptions) Validate() error {
	switch {
	case o.Listen == "" && (o.GitLabTokenFile != "" || o.GitHubKeysFile != ""):
		return errors.New("--gitlab-revocation-token-file and --github-public-keys-file need --leak-intake-listen")
	case o.Listen != "" && o.GitLabTokenFile == "" && o.GitHubKeysFile == "":
		return errors.New("--leak-intake-listen needs --gitlab-revocation-token-file or --github-public-keys-file (or both)")
	case o.Listen != "" && (o.Rate < 0 || o.Burst < 0 || o.MaxBodyBytes < 0):
		return errors.New("--leak-intake-rate, --leak-intake-burst and --leak-intake-max-body-bytes must not be negative (0: the default)")
	}
	return nil
}

// clusterRevoker adapts revocation.Cluster to intake.Revoker.
type clusterRevoker struct{ c *revocation.Cluster }

func (r clusterRevoker) Revoke(ctx context.Context, source string, reports []intake.Report) ([]intake.Outcome, error) {
	in := make([]revocation.Reported, len(reports))
	for i, rep := range reports {
		in[i] = revocation.Reported{Key: rep.Token, Location: rep.Location}
	}
	got, err := r.c.Revoke(ctx, source, in)
	if err != nil {
		return nil, err
	}
	out := make([]intake.Outcome, len(got))
	for i, g := range got {
		switch g {
		case revocation.Filed:
			out[i] = intake.Revoked
		case revocation.AlreadyRevoked:
			out[i] = intake.AlreadyRevoked
		}
	}
	return out, nil
}

// intakeServer serves the intakes on every replica (filing a request is
// one patch; the leader's controller acts on it).
type intakeServer struct {
	srv *http.Server
	log logr.Logger
}

func (s *intakeServer) NeedLeaderElection() bool { return false }

func (s *intakeServer) Start(ctx context.Context) error {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.srv.Addr)
	if err != nil {
		return fmt.Errorf("leak intake: %w", err)
	}
	s.log.Info("serving the secret-scanning intakes", "address", l.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return s.srv.Shutdown(sctx)
	}
}

// addIntake adds the intakes to the manager when --leak-intake-listen is set.
func addIntake(mgr ctrl.Manager, o IntakeOptions, recordsNamespace string) error {
	if o.Listen == "" {
		return nil
	}
	log := ctrl.Log.WithName("leak-intake")
	opts := intake.Options{
		Revoker: clusterRevoker{&revocation.Cluster{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), RecordsNamespace: recordsNamespace}},
		Rate:    o.Rate, Burst: o.Burst, MaxBodyBytes: o.MaxBodyBytes,
		Registerer: metrics.Registry,
		Log:        log,
	}
	if path := o.GitLabTokenFile; path != "" {
		opts.GitLabToken = func() ([]byte, error) { return os.ReadFile(path) } //nolint:gosec // the administrator names the file
	}
	if path := o.GitHubKeysFile; path != "" {
		if _, err := intake.GitHubKeysFile(path)(); err != nil {
			return fmt.Errorf("--github-public-keys-file: %w", err)
		}
		opts.GitHubKeys = intake.GitHubKeysFile(path)
	}
	h, err := intake.New(opts)
	if err != nil {
		return err
	}
	return mgr.Add(&intakeServer{log: log, srv: &http.Server{
		Addr: o.Listen, Handler: h,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10,
	}})
}
