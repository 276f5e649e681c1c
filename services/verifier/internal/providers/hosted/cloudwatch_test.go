package hosted

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/smithy-go/encoding/cbor"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// fakeCloudWatch stands in for Amazon CloudWatch's GetMetricData as its
// API reference documents it
// (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html),
// spoken in the Smithy RPC v2 CBOR protocol the SDK uses
// (https://smithy.io/2.0/additional-specs/protocols/smithy-rpc-v2.html:
// POST /service/GraniteServiceVersion20100801/operation/GetMetricData,
// Smithy-Protocol: rpc-v2-cbor, CBOR bodies, timestamps as tag 1). It
// answers the first call 503 (ServiceUnavailable), then two pages joined by
// NextToken, and records what it was sent.
type fakeCloudWatch struct {
	mu       sync.Mutex
	calls    int
	requests []cbor.Map
	auth     []string
	dates    []string
}

func (f *fakeCloudWatch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if r.URL.Path != "/service/GraniteServiceVersion20100801/operation/GetMetricData" || r.Header.Get("Smithy-Protocol") != "rpc-v2-cbor" {
		http.Error(w, "unknown operation", http.StatusNotFound)
		return
	}
	b, _ := io.ReadAll(r.Body)
	v, err := cbor.Decode(b)
	in, ok := v.(cbor.Map)
	if err != nil || !ok {
		http.Error(w, "bad CBOR", http.StatusBadRequest)
		return
	}
	f.requests = append(f.requests, in)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	f.dates = append(f.dates, r.Header.Get("X-Amz-Date"))
	w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
	w.Header().Set("Content-Type", "application/cbor")
	if f.calls == 1 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(cbor.Encode(cbor.Map{"__type": cbor.String("com.amazonaws.cloudwatch#ServiceUnavailable"), "message": cbor.String("try again")}))
		return
	}
	ts := func(t time.Time) cbor.Value { return &cbor.Tag{ID: 1, Value: cbor.Float64(float64(t.Unix()))} }
	result := func(id string, values ...float64) cbor.Map {
		vs, tss := cbor.List{}, cbor.List{}
		for i, v := range values {
			vs = append(vs, cbor.Float64(v))
			tss = append(tss, ts(fixedNow.Add(-time.Duration(i+1)*time.Minute)))
		}
		return cbor.Map{"Id": cbor.String(id), "Label": cbor.String(id + " label"), "StatusCode": cbor.String("Complete"), "Values": vs, "Timestamps": tss}
	}
	out := cbor.Map{"Messages": cbor.List{}}
	if tok, _ := in["NextToken"].(cbor.String); tok == "" {
		out["MetricDataResults"] = cbor.List{result("errors", 1, 2)}
		out["NextToken"] = cbor.String("page-2")
	} else {
		out["MetricDataResults"] = cbor.List{result("errors", 3), result("rate", 0.001)}
	}
	_, _ = w.Write(cbor.Encode(out))
}

func TestCloudWatch(t *testing.T) {
	t.Parallel()
	fake := &fakeCloudWatch{}
	srv := serve(t, fake.ServeHTTP)
	p := &CloudWatch{Base: base(), Options: []func(*cloudwatch.Options){func(o *cloudwatch.Options) {
		o.BaseEndpoint = aws.String(srv.URL)
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	}}}
	settings := map[string]any{
		"interval": "10m",
		"metricDataQueries": []any{
			map[string]any{"id": "rate", "expression": "errors / 100"},
			map[string]any{"id": "errors", "returnData": false, "metricStat": map[string]any{
				"metric": map[string]any{"namespace": "app", "metricName": "errors", "dimensions": []any{map[string]any{"name": "service", "value": "shop"}}},
				"period": "300", "stat": "Sum", "unit": "Count"}},
		},
	}
	sec := secrets{"cloudwatch": {"access-key-id": "AKIDCARAVAN", "secret-access-key": "s3cr3t-key", "region": "eu-west-1"}}
	ms := measure(t, "cloudWatch", p, model.MetricProvider{CloudWatch: settings}, `all(result[0].Values, {# < 5}) && result[1].Values[0] < 0.01`, sec)
	if ms.Phase != analysis.PhaseSuccessful {
		t.Fatalf("measurement %+v", ms)
	}
	for _, want := range []string{`"Id":"errors"`, `"Values":[1,2,3]`, `"Id":"rate"`, `"StatusCode":"Complete"`} {
		if !strings.Contains(ms.Value, want) {
			t.Errorf("value %s lacks %s", ms.Value, want)
		}
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.calls != 3 {
		t.Fatalf("%d calls, want 3 (a 503 retried, then two pages)", fake.calls)
	}
	// The SDK signs with the wall clock (it has no clock to inject), so the
	// credential scope's date is the one of the request's own X-Amz-Date.
	for i, a := range fake.auth {
		day, _, _ := strings.Cut(fake.dates[i], "T")
		if len(day) != 8 || !strings.HasPrefix(a, "AWS4-HMAC-SHA256 Credential=AKIDCARAVAN/"+day+"/eu-west-1/monitoring/aws4_request") {
			t.Fatalf("Authorization %q (X-Amz-Date %q) is not a sigv4 signature for monitoring in eu-west-1", a, fake.dates[i])
		}
	}
	in := fake.requests[1]
	start, _ := cbor.AsTime(in["StartTime"])
	end, _ := cbor.AsTime(in["EndTime"])
	if !end.Equal(fixedNow) || end.Sub(start) != 10*time.Minute {
		t.Errorf("window %s..%s, want the 10m before %s", start, end, fixedNow)
	}
	qs := in["MetricDataQueries"].(cbor.List)
	stat := qs[1].(cbor.Map)["MetricStat"].(cbor.Map)
	metric := stat["Metric"].(cbor.Map)
	period, _ := cbor.AsInt32(stat["Period"])
	if qs[0].(cbor.Map)["Expression"] != cbor.String("errors / 100") || metric["Namespace"] != cbor.String("app") || period != 300 ||
		stat["Stat"] != cbor.String("Sum") || stat["Unit"] != cbor.String("Count") || qs[1].(cbor.Map)["ReturnData"] != cbor.Bool(false) {
		t.Errorf("queries sent: %#v", qs)
	}
	if d := metric["Dimensions"].(cbor.List)[0].(cbor.Map); d["Name"] != cbor.String("service") || d["Value"] != cbor.String("shop") {
		t.Errorf("dimensions sent: %#v", metric["Dimensions"])
	}
	if fake.requests[2]["NextToken"] != cbor.String("page-2") {
		t.Errorf("second page asked with %#v", fake.requests[2]["NextToken"])
	}
	if strings.Contains(ms.Value+ms.Message, "s3cr3t-key") {
		t.Error("the secret key leaked into the measurement")
	}
}

// Settings CloudWatch would refuse are refused before any call, naming the
// field.
func TestCloudWatchSettings(t *testing.T) {
	t.Parallel()
	p := &CloudWatch{Base: base()}
	sec := secrets{"cloudwatch": {"region": "eu-west-1", "access-key-id": "AKID"}}
	for _, tc := range []struct {
		settings map[string]any
		sec      secrets
		want     string
	}{
		{map[string]any{}, sec, "metricDataQueries must have at least one query"},
		{map[string]any{"metricDataQueries": []any{map[string]any{"expression": "x"}}}, sec, "metricDataQueries[0].id must be set"},
		{map[string]any{"metricDataQueries": []any{map[string]any{"id": "a"}}}, sec, "exactly one of expression and metricStat"},
		{map[string]any{"metricDataQueries": []any{map[string]any{"id": "a", "metricStat": map[string]any{"metric": map[string]any{"metricName": "m"}, "stat": "Sum"}}}}, sec, "metricStat.period must be set"},
		{map[string]any{"metricDataQueries": []any{map[string]any{"id": "a", "expression": "x", "period": "soon"}}}, sec, "period \"soon\" is not a positive"},
		{map[string]any{"interval": "ever", "metricDataQueries": []any{map[string]any{"id": "a", "expression": "x"}}}, sec, "cloudWatch.interval"},
		{map[string]any{"metricDataQueries": []any{map[string]any{"id": "a", "expression": "x"}}, "namespace": "x"}, sec, `unknown field "namespace"`},
		{map[string]any{"metricDataQueries": []any{map[string]any{"id": "a", "expression": "x"}}}, sec, "access-key-id and secret-access-key go together"},
	} {
		ms := measure(t, "cloudWatch", p, model.MetricProvider{CloudWatch: tc.settings}, "true", tc.sec)
		if ms.Phase != analysis.PhaseError || !strings.Contains(ms.Message, tc.want) {
			t.Errorf("%v: %+v, want an Error naming %q", tc.settings, ms, tc.want)
		}
	}
}
