package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

// dryRunTimeout bounds a dry run on the promoter; the gateway waits a
// little longer for the answer.
const dryRunTimeout = 2 * time.Minute

// dryRunParam reads ?dryRun= (true, false, 1, 0, or absent).
func dryRunParam(w http.ResponseWriter, r *http.Request) (bool, bool) {
	v := r.URL.Query().Get("dryRun")
	if v == "" {
		return false, true
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		invalid(w, "dryRun", "must be true or false")
		return false, false
	}
	return b, true
}

// dryRun asks a promoter replica to run p's steps without effects (see
// events.DryRunSubject) and answers 200 with what it found. p is not
// stored and no event is published.
func (s *server) dryRun(w http.ResponseWriter, r *http.Request, p *model.Promotion) {
	noteAudit(r, "promote-dry-run", "Promotion/"+p.Name, "")
	data, err := json.Marshal(events.DryRunRequest{Promotion: p, Timeout: dryRunTimeout})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dryRunTimeout+10*time.Second)
	defer cancel()
	msg, err := s.js.Conn().RequestWithContext(ctx, events.DryRunSubject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		writeError(w, http.StatusServiceUnavailable, codeNotReady, "no promoter is running to do the dry run")
		return
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		writeError(w, http.StatusGatewayTimeout, codeNotReady, "the promoter did not answer the dry run in time")
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	var reply events.DryRunReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		s.internal(w, r, err)
		return
	}
	if reply.Error != "" || reply.Result == nil {
		writeError(w, http.StatusBadGateway, codeInternal, "the promoter could not do the dry run: "+reply.Error)
		return
	}
	writeJSON(w, http.StatusOK, reply.Result)
}
