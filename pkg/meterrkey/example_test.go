package meterrkey_test

import (
	"io"
	"log"
	"net/http"
	"time"

	"github.com/meterr/meterr-operator/pkg/meterrkey"
)

// A workload that mounts its key Secret at /var/run/secrets/meterr (or gets
// METERR_API_KEY from envFrom) calls the meterr API with the current key,
// through rotations, without restarting.
func Example() {
	src, err := meterrkey.New(meterrkey.Options{
		// Path: meterrkey.DefaultPath, Env: meterrkey.DefaultEnv, Resync: time.Minute,
		OnReload: func(keyID string, err error) {
			if err != nil {
				log.Printf("meterr key: keeping key %s: %v", keyID, err)
				return
			}
			log.Printf("meterr key: now using key %s", keyID) // the id, never the key
		},
	})
	if err != nil {
		log.Fatal(err) // no valid key in the file or the environment
	}
	defer src.Close()

	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &meterrkey.Transport{
			Source: src,
			// The key is sent to this origin only: a redirect elsewhere
			// (another host, or https to http) goes on without it.
			Origins: []string{"https://api.meterr.ai"},
		},
	}
	resp, err := client.Get("https://api.meterr.ai/v1/auth/verify")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	log.Printf("%s %s", resp.Status, body)
}
