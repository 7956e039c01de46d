package webhookserver

import (
	"encoding/json"
	"net/http"
	"strings"

	"k8s.io/utils/clock"

	"github.com/meterr/meterr-operator/internal/usage"
	"github.com/meterr/meterr-operator/webhookserver/index"
)

// usageHandler serves the usage report (internal/usage) on the metrics
// port: GET /v1/usage?since=<Unix seconds>, bearer token required. It lists
// the versions this replica accepted a request for at since or later, from
// the index's usage words; a replica restarted lists from its start on.
func usageHandler(idx *index.Index, token []byte, clk clock.PassiveClock) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !usage.Authorized(r, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meterr-usage"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		since, err := usage.Since(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// Now before listing: a use marked while listing is in this
		// report or, being at now or later, in the next.
		rep := usage.Report{Now: clk.Now().Unix()}
		for _, v := range idx.Usage(since) {
			ns, name, _ := strings.Cut(v.Owner, "/")
			rep.Versions = append(rep.Versions, usage.Version{Namespace: ns, Name: name, UID: v.OwnerUID,
				KeyID: v.KeyID, LastUsed: v.LastUsed.Unix()})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&rep)
	})
}
