package cmd

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/meterr/meterr-operator/pkg/webhooksig"
)

const webhookUsage = `Usage:
  meterr-operator webhook sign   --secret-file F [--secret-file F2 ...] [--legacy] [--timestamp UNIX] < body
  meterr-operator webhook verify --secret-file F [--secret-file F2 ...] --signature VALUE [--tolerance 5m] [--allow-legacy] < body

sign prints an X-Meterr-Signature value for the body on standard input:
"t=<unix>,v1=<hex>" (one v1 per secret), or with --legacy the bare hex HMAC-SHA256.
verify checks one and exits 0 ("ok") or 1 (why not). Secrets are read from files
(--secret-file) or environment variables (--secret-env), never from the command line;
one trailing newline in a secret file is ignored. The body is used byte for byte.
`

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// RunWebhook runs `meterr-operator webhook sign|verify`. now is the clock
// (time.Now when nil). Nothing it prints or returns contains a secret.
func RunWebhook(args []string, stdin io.Reader, stdout, stderr io.Writer, now func() time.Time) error {
	if now == nil {
		now = time.Now
	}
	if len(args) == 0 || (args[0] != "sign" && args[0] != "verify") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			_, _ = io.WriteString(stdout, webhookUsage)
			return flag.ErrHelp
		}
		_, _ = io.WriteString(stderr, webhookUsage)
		return errors.New("expected sign or verify")
	}
	sub := args[0]
	fs := flag.NewFlagSet("meterr-operator webhook "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files, envs stringList
	fs.Var(&files, "secret-file", "File holding a signing secret (repeatable).")
	fs.Var(&envs, "secret-env", "Environment variable holding a signing secret (repeatable).")
	bodyFile := fs.String("body-file", "", "Read the body from this file instead of standard input.")
	var (
		legacy      *bool
		timestamp   *int64
		signature   *string
		tolerance   *time.Duration
		allowLegacy *bool
	)
	if sub == "sign" {
		legacy = fs.Bool("legacy", false, "Print the bare hex HMAC-SHA256 (no timestamp; one secret).")
		timestamp = fs.Int64("timestamp", 0, "Unix seconds to sign at; 0: now.")
	} else {
		signature = fs.String("signature", "", "The X-Meterr-Signature value to check (required).")
		tolerance = fs.Duration("tolerance", webhooksig.DefaultTolerance, "Largest accepted clock difference of a timestamped signature.")
		allowLegacy = fs.Bool("allow-legacy", false, "Also accept the bare hex form, which has no timestamp and can be replayed.")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	secrets, err := readSecrets(files, envs)
	if err != nil {
		return err
	}
	var body []byte
	if *bodyFile != "" {
		body, err = os.ReadFile(*bodyFile)
	} else {
		body, err = io.ReadAll(stdin)
	}
	if err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}

	if sub == "sign" && *timestamp < 0 {
		return errors.New("--timestamp must be Unix seconds (0 or absent: now)")
	}
	if sub == "sign" {
		var out string
		if *legacy {
			if len(secrets) != 1 {
				return errors.New("--legacy signs with exactly one secret")
			}
			out = webhooksig.Sign(secrets[0], body)
		} else {
			at := now()
			if *timestamp != 0 {
				at = time.Unix(*timestamp, 0)
			}
			if out, err = webhooksig.SignAt(body, at, secrets...); err != nil {
				return err
			}
		}
		_, err = fmt.Fprintln(stdout, out)
		return err
	}
	if *signature == "" {
		return errors.New("--signature is required")
	}
	v := webhooksig.Verifier{Secrets: secrets, Tolerance: *tolerance, AllowLegacy: *allowLegacy, Now: now}
	if err := v.Verify(body, *signature); err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, "ok")
	return err
}

func readSecrets(files, envs []string) ([][]byte, error) {
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f) //nolint:gosec // the user names the secret file
		if err != nil {
			return nil, fmt.Errorf("reading a secret: %w", err)
		}
		b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
		if len(b) == 0 {
			return nil, fmt.Errorf("secret file %s is empty", f)
		}
		out = append(out, b)
	}
	for _, e := range envs {
		v, ok := os.LookupEnv(e)
		if !ok || v == "" {
			return nil, fmt.Errorf("environment variable %s is not set or empty", e)
		}
		out = append(out, []byte(v))
	}
	if len(out) == 0 {
		return nil, errors.New("no secret: give --secret-file or --secret-env")
	}
	return out, nil
}
