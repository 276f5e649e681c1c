package service

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

//go:generate go run ./internal/genperms ../../deploy/helm/caravan/files/nats-permissions.yaml

// Services are the services a NATS user can be made for, in the order the
// permissions table lists them.
var Services = []string{"gateway", "discovery", "promoter", "verifier"}

// SetupUser is the NATS user of caravan setup (the chart's setup Job): the only
// one that creates and updates streams and buckets.
const SetupUser = "setup"

// Users are the NATS users of a distributed install: one per service and
// the setup user.
var Users = append(append([]string(nil), Services...), SetupUser)

// NATSRule is one row of the NATS permissions Caravan needs: a subject (a
// NATS wildcard pattern) and the users (Users) that publish to it and
// subscribe to it.
type NATSRule struct {
	Subject   string
	Publish   []string
	Subscribe []string
	Why       string
}

// NATSRules are the NATS permissions of every service and of caravan setup,
// least privilege per user; docs/deploy.md shows them as a table (Table),
// the Helm chart's NATS users are generated from them (PermissionsYAML)
// and a test runs every service as a NATS user holding exactly its own.
// Only caravan setup may create, update or delete streams: the services
// read stream information (checking the layout), read KV entries, and
// create the consumers they read through.
var NATSRules = []NATSRule{
	{Subject: "$JS.API.>", Publish: []string{SetupUser}, Why: "the whole JetStream API: declaring the streams and buckets"},
	{Subject: "$JS.API.INFO", Publish: Services, Why: "JetStream account information"},
	{Subject: "$JS.API.STREAM.INFO.*", Publish: Services, Why: "stream and bucket information: checking the layout caravan setup declared, binding buckets"},
	{Subject: "$JS.API.DIRECT.GET.>", Publish: Services, Why: "reading KV entries"},
	{Subject: "$JS.API.STREAM.MSG.GET.*", Publish: Services, Why: "reading KV entries (buckets without direct get)"},
	{Subject: "$JS.API.CONSUMER.>", Publish: Services, Why: "creating, reading and removing consumers: durable event consumers, KV watches, ordered reads (no stream rights)"},
	{Subject: "$JS.API.STREAM.PURGE.CARAVAN_EVENTS", Publish: []string{"gateway"}, Why: "removing a deleted project's events"},
	{Subject: "$JS.ACK.CARAVAN_EVENTS.>", Publish: Services, Why: "acking events"},
	{Subject: "$JS.FC.>", Publish: Services, Why: "flow control of KV watches and ordered consumers"},
	{Subject: "$KV.>", Publish: Services, Why: "writing the KV buckets (state, leases, secrets; all named `caravan-*`)"},
	{Subject: "caravan.events.>", Publish: Services, Why: "publishing events (the stream `CARAVAN_EVENTS`)"},
	{Subject: "caravan.audit.>", Publish: []string{"gateway", "promoter"}, Why: "appending audit records (the stream `CARAVAN_AUDIT`; the promoter records automatic promotions and rollbacks)"},
	{Subject: "caravan.replicas.>", Publish: []string{"discovery", "promoter", "verifier"}, Subscribe: []string{"discovery", "promoter", "verifier"}, Why: "replica ID claims (a duplicate live ID is refused)"},
	{Subject: "caravan.discovery.forward.>", Publish: []string{"discovery"}, Subscribe: []string{"discovery"}, Why: "discovery forwards a request to the replica holding the Warehouse"},
	{Subject: "caravan.promoter.wake.>", Publish: []string{"promoter"}, Subscribe: []string{"promoter"}, Why: "waking the promoter replicas"},
	{Subject: "caravan.promoter.dryrun", Publish: []string{"gateway"}, Subscribe: []string{"promoter"}, Why: "dry-run promotions: the gateway's request, one promoter replica's answer"},
	{Subject: "_INBOX.>", Publish: []string{"discovery", "promoter", "verifier"}, Subscribe: Users, Why: "replies (JetStream API, claims, forwards, dry runs); publishing: answering claims, forwards and dry runs"},
}

// NATSPermissions are the subjects one NATS user may publish to and
// subscribe to.
type NATSPermissions struct {
	Publish   []string
	Subscribe []string
}

// Permissions returns what a user of Users needs of NATS; "caravan" (the
// all-in-one server running setup and every service on one connection)
// needs the union.
func Permissions(service string) (NATSPermissions, error) {
	if service != "caravan" && !slices.Contains(Users, service) {
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

// who names the users of one table cell: "services" for the four.
func who(users []string) string {
	if len(users) == 0 {
		return "—"
	}
	var out []string
	if !slices.ContainsFunc(Services, func(s string) bool { return !slices.Contains(users, s) }) {
		out = append(out, "all services")
	}
	for _, u := range users {
		if u == SetupUser || !slices.Contains(out, "all services") {
			out = append(out, u)
		}
	}
	return strings.Join(out, ", ")
}

// PermissionsYAML renders every user's permissions as the Helm chart's
// deploy/helm/caravan/files/nats-permissions.yaml (go generate writes it;
// a test fails when it is stale): per user, the subjects it may publish
// to and subscribe to, as JSON strings (valid YAML, and valid in a NATS
// server configuration).
func PermissionsYAML() []byte {
	var b strings.Builder
	b.WriteString("# NATS permissions of each Caravan user, generated from service.NATSRules\n" +
		"# (pkg/service/permissions.go) by go generate ./service in pkg: do not edit.\n")
	for _, u := range Users {
		p, _ := Permissions(u)
		fmt.Fprintf(&b, "%s:\n  publish: %s\n  subscribe: %s\n", u, jsonList(p.Publish), jsonList(p.Subscribe))
	}
	return []byte(b.String())
}

func jsonList(l []string) string {
	if len(l) == 0 {
		return "[]"
	}
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
