package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The deploy/ files an operator imports: they must parse and query only
// metrics the server exports.

// metricName finds a dugout metric in a PromQL expression; a histogram's
// series end in _bucket, _sum or _count, which the family's name does not.
var metricName = regexp.MustCompile(`\bdugout_[a-z_]+`)

// exportedFamilies is every family a running server's registry gathers.
func exportedFamilies(t *testing.T) map[string]bool {
	t.Helper()
	s := startServer(t, testConfig(t))
	fams, err := s.met.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	have := map[string]bool{}
	for _, f := range fams {
		have[f.GetName()] = true
	}
	return have
}

// checkQueried fails for every dugout metric expr names that have lacks.
func checkQueried(t *testing.T, where, expr string, have map[string]bool) int {
	t.Helper()
	names := metricName.FindAllString(expr, -1)
	for _, n := range names {
		family := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if f, ok := strings.CutSuffix(n, suffix); ok && have[f] {
				family = f
			}
		}
		if !have[family] {
			t.Errorf("%s queries %s, which the server does not export", where, n)
		}
	}
	return len(names)
}

func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		SchemaVersion int `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name, Type string
				Query      any
			}
		}
		Panels []struct {
			Title      string
			Datasource struct{ Type, UID string }
			Targets    []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("deploy/grafana-dashboard.json: %v", err)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: older than Grafana 9", d.SchemaVersion)
	}
	var ds bool
	for _, v := range d.Templating.List {
		ds = ds || v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}
	if !ds {
		t.Error("no Prometheus datasource variable named datasource")
	}
	have := exportedFamilies(t)
	queried := map[string]bool{}
	for _, p := range d.Panels {
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %+v, %d targets", p.Title, p.Datasource, len(p.Targets))
		}
		for _, tg := range p.Targets {
			if checkQueried(t, "panel "+p.Title, tg.Expr, have) == 0 {
				t.Errorf("panel %q: %q queries no dugout metric", p.Title, tg.Expr)
			}
			for _, n := range metricName.FindAllString(tg.Expr, -1) {
				queried[n] = true
			}
		}
	}
	for _, want := range []string{"dugout_sessions", "dugout_closes_total", "dugout_ping_rtt_seconds_bucket",
		"dugout_resumes_total", "dugout_hub_step_seconds_bucket", "dugout_webhook_deliveries_total"} {
		if !queried[want] {
			t.Errorf("the dashboard has no panel on %s", want)
		}
	}
}

// TestAlertRules checks deploy/alerts.yml's shape without a YAML library
// (none is in go.mod): one group list, and every rule with an alert name,
// an expression on exported metrics, a for, a severity and a summary.
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile("deploy/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	have := exportedFamilies(t)
	type rule struct {
		name, expr                string
		hasFor, severity, summary bool
	}
	var rules []*rule
	var inExpr bool
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\n")
		trimmed := strings.TrimSpace(line)
		if strings.Contains(line, "\t") {
			t.Errorf("a tab in YAML: %q", line)
		}
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if name, ok := strings.CutPrefix(trimmed, "- alert: "); ok {
			rules = append(rules, &rule{name: name})
			inExpr = false
			continue
		}
		if len(rules) == 0 {
			continue
		}
		r := rules[len(rules)-1]
		key, value, _ := strings.Cut(trimmed, ":")
		value = strings.TrimSpace(value)
		switch key {
		case "expr":
			r.expr, inExpr = value, true
			if value == ">-" {
				r.expr = "" // a folded block: its lines follow
			}
		case "for", "labels", "annotations", "severity", "summary", "description":
			inExpr = false
			r.hasFor = r.hasFor || key == "for"
			r.severity = r.severity || key == "severity" && (value == "page" || value == "warning")
			r.summary = r.summary || key == "summary"
		default:
			if inExpr {
				r.expr += " " + trimmed
			}
		}
	}
	if !strings.HasPrefix(string(b), "#") || !strings.Contains(string(b), "\ngroups:\n") || len(rules) < 5 {
		t.Fatalf("deploy/alerts.yml: no groups or too few rules (%d)", len(rules))
	}
	for _, r := range rules {
		if r.expr == "" || !r.hasFor || !r.severity || !r.summary {
			t.Errorf("rule %s: %+v", r.name, *r)
		}
		if checkQueried(t, "alert "+r.name, r.expr, have) == 0 {
			t.Errorf("alert %s queries no dugout metric: %q", r.name, r.expr)
		}
	}
}
