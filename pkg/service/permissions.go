package service

import (
	"fmt"
	"slices"
	"strings"
)

// Services are the services a NATS user can be made for, in the order the
// permissions table lists them.
var Services = []string{"gateway", "discovery", "promoter", "verifier"}

// NATSRule is one row of the NATS permissions Caravan's services need: a
// subject (a NATS wildcard pattern) and the services that publish to it and
// subscribe to it.
type NATSRule struct {
	Subject   string
	Publish   []string
	Subscribe []string
	Why       string
}

// NATSRules are the NATS permissions of every service, least privilege per
// service; docs/deploy.md shows them as a table (Table) and a test runs
// every service as a NATS user holding exactly its own.
var NATSRules = []NATSRule{
	{Subject: "$JS.API.>", Publish: Services, Why: "JetStream API: streams, consumers, KV"},
	{Subject: "$JS.ACK.CARAVAN_EVENTS.>", Publish: Services, Why: "acking events"},
	{Subject: "$JS.FC.>", Publish: Services, Why: "flow control of KV watches and ordered consumers"},
	{Subject: "$KV.>", Publish: Services, Why: "writing the KV buckets (state, leases, secrets; all named `caravan-*`)"},
	{Subject: "caravan.events.>", Publish: Services, Why: "publishing events (the stream `CARAVAN_EVENTS`)"},
	{Subject: "caravan.audit.>", Publish: []string{"gateway", "promoter"}, Why: "appending audit records (the stream `CARAVAN_AUDIT`; the promoter records automatic promotions and rollbacks)"},
	{Subject: "caravan.replicas.>", Publish: []string{"discovery", "promoter", "verifier"}, Subscribe: []string{"discovery", "promoter", "verifier"}, Why: "replica ID claims (a duplicate live ID is refused)"},
	{Subject: "caravan.discovery.forward.>", Publish: []string{"discovery"}, Subscribe: []string{"discovery"}, Why: "discovery forwards a request to the replica holding the Warehouse"},
	{Subject: "caravan.promoter.wake.>", Publish: []string{"promoter"}, Subscribe: []string{"promoter"}, Why: "waking the promoter replicas"},
	{Subject: "caravan.promoter.dryrun", Publish: []string{"gateway"}, Subscribe: []string{"promoter"}, Why: "dry-run promotions: the gateway's request, one promoter replica's answer"},
	{Subject: "_INBOX.>", Publish: []string{"discovery", "promoter", "verifier"}, Subscribe: Services, Why: "replies (JetStream API, claims, forwards, dry runs); publishing: answering claims, forwards and dry runs"},
}

// NATSPermissions are the subjects one NATS user may publish to and
// subscribe to.
type NATSPermissions struct {
	Publish   []string
	Subscribe []string
}

// Permissions returns what service needs of NATS; "caravan" (the all-in-one
// server running every service on one connection) needs the union.
func Permissions(service string) (NATSPermissions, error) {
	if service != "caravan" && !slices.Contains(Services, service) {
		return NATSPermissions{}, fmt.Errorf("NATS permissions: unknown service %q", service)
	}
	var p NATSPermissions
	for _, r := range NATSRules {
		if service == "caravan" || slices.Contains(r.Publish, service) {
			if len(r.Publish) > 0 {
				p.Publish = append(p.Publish, r.Subject)
			}
		}
		if service == "caravan" || slices.Contains(r.Subscribe, service) {
			if len(r.Subscribe) > 0 {
				p.Subscribe = append(p.Subscribe, r.Subject)
			}
		}
	}
	return p, nil
}

// Table renders NATSRules as the Markdown table of docs/deploy.md.
func Table() string {
	var b strings.Builder
	b.WriteString("| Subjects | Publish | Subscribe | Why |\n|---|---|---|---|\n")
	for _, r := range NATSRules {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.Subject, who(r.Publish), who(r.Subscribe), r.Why)
	}
	return b.String()
}

// who names the services of one table cell.
func who(services []string) string {
	switch {
	case len(services) == 0:
		return "—"
	case len(services) == len(Services):
		return "all"
	}
	return strings.Join(services, ", ")
}
