package webhooksig_test

import (
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/meterr/meterr-operator/pkg/webhooksig"
)

// A webhook handler: verify the raw body before decoding it.
func Example() {
	v := &webhooksig.Verifier{Secrets: [][]byte{[]byte(os.Getenv("WEBHOOK_SECRET"))}}
	http.HandleFunc("/webhook", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "cannot read body", http.StatusBadRequest)
			return
		}
		if err := v.Verify(body, r.Header.Get(webhooksig.Header)); err != nil {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		// json.Unmarshal(body, &event) and process it.
	})
	fmt.Println(webhooksig.Sign([]byte("secret"), []byte("hello")))
	// Output: 88aab3ede8d3adf94d26ab90d3bafd4a2083070c3bcce9c014ee04a443847c0b
}
