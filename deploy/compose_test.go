// Package deploy_test checks the deployment files at the repository root
// (docker-compose.yml, Dockerfile, .dockerignore) without a Docker engine or
// network: the compose file is loaded and validated with compose-go, the
// Dockerfile is read as text.
package deploy_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/services"
)

const composeFile = "docker-compose.yml"

// repoRoot is the directory holding go.mod; the test runs in deploy/.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found: %v", err)
	}
	return root
}

// loadProject loads the compose file the way `docker compose` does from the
// repository root, but with an explicit environment instead of the process
// environment and without the .env file, so that the result does not depend on
// the machine. compose-go never talks to a Docker engine or the network: it
// only reads local files (the compose file, and env_file/label_file entries
// when services have them).
func loadProject(t *testing.T, env map[string]string, profiles ...string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, composeFile)},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(environ),
		cli.WithProfiles(profiles),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return project
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("service %q: %v (services: %v, disabled: %v)", name, err, p.ServiceNames(), p.DisabledServiceNames())
	}
	return s
}

func envValue(t *testing.T, s types.ServiceConfig, key string) string {
	t.Helper()
	v, ok := s.Environment[key]
	if !ok || v == nil {
		t.Errorf("service %s: environment %s is not set", s.Name, key)
		return ""
	}
	return *v
}

// splitImage splits "repo/name:tag" into its name and tag. Digests are not
// used in this file, so a reference with one is reported as unpinned by tag.
func splitImage(image string) (name, tag string) {
	if strings.Contains(image, "@") {
		return image, ""
	}
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon <= slash {
		return image, ""
	}
	return image[:colon], image[colon+1:]
}

func TestComposeDefaultFileIsThisOne(t *testing.T) {
	// docker compose prefers compose.yaml over docker-compose.yml; a second
	// file at the root would silently shadow this one.
	root := repoRoot(t)
	for _, name := range cli.DefaultFileNames {
		if name == composeFile {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, name)); err == nil {
			t.Errorf("%s exists next to %s; docker compose would pick one of them", name, composeFile)
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Error(err)
		}
	}
}

func TestComposeVariablesHaveDefaults(t *testing.T) {
	// `docker compose up` must work without an .env file: every ${VAR} needs
	// a default (${VAR:-x}) or an explicit error message (${VAR:?msg}).
	b, err := os.ReadFile(filepath.Join(repoRoot(t), composeFile))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			lines = append(lines, line)
		}
	}
	text := strings.ReplaceAll(strings.Join(lines, "\n"), "$$", "") // $$ is a literal $
	if m := regexp.MustCompile(`\$[A-Za-z_]\w*`).FindString(text); m != "" {
		t.Errorf("bare %s: use ${VAR:-default}", m)
	}
	withDefault := regexp.MustCompile(`^[A-Za-z_]\w*:?[-?]`)
	for _, m := range regexp.MustCompile(`\$\{([^}]*)\}`).FindAllStringSubmatch(text, -1) {
		if !withDefault.MatchString(m[1]) {
			t.Errorf("${%s} has no default", m[1])
		}
	}
}

func TestComposeStack(t *testing.T) {
	p := loadProject(t, nil)

	if p.Name != "clickagg" {
		t.Errorf("project name = %q, want clickagg (top-level name:)", p.Name)
	}
	for _, name := range []string{"clickhouse", "redis", "clickagg"} {
		if !slices.Contains(p.ServiceNames(), name) {
			t.Errorf("service %s missing or behind a profile; services: %v", name, p.ServiceNames())
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("clickhouse", func(t *testing.T) {
		ch := service(t, p, "clickhouse")
		name, tag := splitImage(ch.Image)
		if name != "clickhouse/clickhouse-server" {
			t.Errorf("image %q: want clickhouse/clickhouse-server", ch.Image)
		}
		m := regexp.MustCompile(`^(\d+)\.(\d+)(\.\d+)*(-alpine)?$`).FindStringSubmatch(tag)
		if m == nil {
			t.Errorf("image %q: tag must pin at least major.minor (no latest, head or empty)", ch.Image)
		} else if major, _ := strconv.Atoi(m[1]); major < 24 {
			t.Errorf("image %q: ClickHouse 24.x or newer required", ch.Image)
		}
		for k, want := range map[string]string{
			"CLICKHOUSE_DB":                        "clickagg",
			"CLICKHOUSE_USER":                      "clickagg",
			"CLICKHOUSE_PASSWORD":                  "clickagg",
			"CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT": "1",
		} {
			if got := envValue(t, ch, k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		if u := ch.Ulimits["nofile"]; u == nil || max(u.Single, u.Soft) < 262144 || max(u.Single, u.Hard) < 262144 {
			t.Errorf("ulimits nofile = %+v, want soft and hard >= 262144", u)
		}
		var dataVolume bool
		for _, v := range ch.Volumes {
			if v.Target == "/var/lib/clickhouse" && v.Type == types.VolumeTypeVolume {
				dataVolume = true
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("volume %q is not declared at top level", v.Source)
				}
			}
		}
		if !dataVolume {
			t.Error("no named volume mounted at /var/lib/clickhouse")
		}
		for _, port := range []uint32{8123, 9000} {
			if !publishes(ch, port) {
				t.Errorf("port %d not published", port)
			}
		}
	})

	t.Run("redis", func(t *testing.T) {
		r := service(t, p, "redis")
		name, tag := splitImage(r.Image)
		if name != "redis" && name != "docker.io/library/redis" {
			t.Errorf("image %q: want redis", r.Image)
		}
		if !regexp.MustCompile(`^7\.\d+(\.\d+)?(-alpine[0-9.]*|-bookworm)?$`).MatchString(tag) {
			t.Errorf("image %q: want redis 7.x pinned to at least major.minor", r.Image)
		}
		cmd := strings.Join(r.Command, " ")
		for _, want := range []string{"--maxmemory ", "--maxmemory-policy allkeys-lru", "--appendonly no"} {
			if !strings.Contains(cmd, want) {
				t.Errorf("command %q lacks %q", cmd, want)
			}
		}
	})

	t.Run("clickagg", func(t *testing.T) {
		app := service(t, p, "clickagg")
		root := repoRoot(t)
		if app.Build == nil {
			t.Fatal("clickagg has no build section")
		}
		if app.Build.Context != root {
			t.Errorf("build context = %q, want the repository root %q", app.Build.Context, root)
		}
		if app.Build.Dockerfile != "Dockerfile" {
			t.Errorf("build dockerfile = %q, want Dockerfile", app.Build.Dockerfile)
		}
		if _, err := os.Stat(filepath.Join(app.Build.Context, app.Build.Dockerfile)); err != nil {
			t.Errorf("Dockerfile: %v", err)
		}

		for _, dep := range []string{"clickhouse", "redis"} {
			d, ok := app.DependsOn[dep]
			if !ok {
				t.Errorf("clickagg does not depend on %s", dep)
				continue
			}
			if d.Condition != types.ServiceConditionHealthy {
				t.Errorf("depends_on %s: condition %q, want %s", dep, d.Condition, types.ServiceConditionHealthy)
			}
		}

		if len(app.Command) == 0 || app.Command[0] != "serve" || !slices.Contains(app.Command, "--migrate") {
			t.Errorf("command = %q, want serve --migrate", app.Command)
		}
		if app.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("restart = %q, want unless-stopped", app.Restart)
		}

		// The service names and ports the app is pointed at.
		if v := envValue(t, app, "CLICKAGG_CLICKHOUSE_HTTP"); v != "" {
			if u, err := url.Parse(v); err != nil || u.Scheme != "http" || u.Host != "clickhouse:8123" {
				t.Errorf("CLICKAGG_CLICKHOUSE_HTTP = %q, want http://clickhouse:8123", v)
			}
		}
		for k, want := range map[string]string{
			"CLICKAGG_CLICKHOUSE_NATIVE": "clickhouse:9000",
			"CLICKAGG_REDIS_ADDR":        "redis:6379",
		} {
			if got := envValue(t, app, k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
			host, _, _ := strings.Cut(want, ":")
			if _, ok := p.Services[host]; !ok {
				t.Errorf("%s points at %q, which is not a service", k, host)
			}
		}
		// Credentials and database must agree with what the ClickHouse
		// container creates.
		ch := service(t, p, "clickhouse")
		for appKey, chKey := range map[string]string{
			"CLICKAGG_CLICKHOUSE_DATABASE": "CLICKHOUSE_DB",
			"CLICKAGG_CLICKHOUSE_USER":     "CLICKHOUSE_USER",
			"CLICKAGG_CLICKHOUSE_PASSWORD": "CLICKHOUSE_PASSWORD",
		} {
			if a, c := envValue(t, app, appKey), envValue(t, ch, chKey); a != c {
				t.Errorf("clickagg %s = %q but clickhouse %s = %q", appKey, a, chKey, c)
			}
		}

		// The listen port, the published port and the healthcheck agree.
		_, listenPort, err := net.SplitHostPort(envValue(t, app, "CLICKAGG_LISTEN"))
		if err != nil {
			t.Fatalf("CLICKAGG_LISTEN: %v", err)
		}
		lp, _ := strconv.ParseUint(listenPort, 10, 32)
		if !publishes(app, uint32(lp)) {
			t.Errorf("listen port %s is not published", listenPort)
		}
		if hc := app.HealthCheck; hc != nil && !strings.Contains(strings.Join(hc.Test, " "), "127.0.0.1:"+listenPort+"/") {
			t.Errorf("healthcheck %q does not probe the listen port %s", hc.Test, listenPort)
		}
	})

	t.Run("healthchecks", func(t *testing.T) {
		all := loadProject(t, nil, "*")
		for _, s := range all.Services {
			hc := s.HealthCheck
			switch {
			case hc == nil:
				t.Errorf("%s: no healthcheck", s.Name)
			case hc.Disable || len(hc.Test) < 2 || (hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL"):
				t.Errorf("%s: healthcheck %q is disabled or malformed", s.Name, hc.Test)
			}
		}
	})

	t.Run("ports bind to loopback", func(t *testing.T) {
		all := loadProject(t, nil, "*")
		for _, s := range all.Services {
			for _, port := range s.Ports {
				if port.Published != "" && port.HostIP != "127.0.0.1" {
					t.Errorf("%s: port %s:%d binds to %q, want 127.0.0.1", s.Name, port.Published, port.Target, port.HostIP)
				}
			}
		}
	})
}

func publishes(s types.ServiceConfig, target uint32) bool {
	for _, p := range s.Ports {
		if p.Target == target && p.Published != "" {
			return true
		}
	}
	return false
}

func TestComposePasswordOverride(t *testing.T) {
	p := loadProject(t, map[string]string{"CLICKHOUSE_PASSWORD": "s3cret"})
	for svc, key := range map[string]string{
		"clickhouse": "CLICKHOUSE_PASSWORD",
		"clickagg":   "CLICKAGG_CLICKHOUSE_PASSWORD",
	} {
		if got := envValue(t, service(t, p, svc), key); got != "s3cret" {
			t.Errorf("%s %s = %q, want the CLICKHOUSE_PASSWORD override", svc, key, got)
		}
	}
}

func TestComposeDemoProfile(t *testing.T) {
	if p := loadProject(t, nil); slices.Contains(p.ServiceNames(), "generator") {
		t.Error("generator runs without --profile demo")
	}
	p := loadProject(t, nil, "demo")
	gen := service(t, p, "generator")
	app := service(t, p, "clickagg")
	if gen.Image != app.Image {
		t.Errorf("generator image %q differs from clickagg image %q", gen.Image, app.Image)
	}
	if len(gen.Command) == 0 || gen.Command[0] != "generate" {
		t.Errorf("generator command = %q, want generate ...", gen.Command)
	}
	if i := slices.Index(gen.Command, "--target"); i < 0 || i+1 >= len(gen.Command) || gen.Command[i+1] != "http://clickagg:8080" {
		t.Errorf("generator command = %q, want --target http://clickagg:8080", gen.Command)
	}
	if d, ok := gen.DependsOn["clickagg"]; !ok || d.Condition != types.ServiceConditionHealthy {
		t.Errorf("generator depends_on clickagg = %+v, want service_healthy", d)
	}
}

// dockerInstruction is one Dockerfile instruction with continuation lines
// joined and comments dropped.
type dockerInstruction struct {
	cmd  string // upper case
	args string
}

func readDockerfile(t *testing.T) [][]dockerInstruction {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		stages [][]dockerInstruction
		buf    strings.Builder
	)
	flush := func() {
		line := strings.TrimSpace(buf.String())
		buf.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := dockerInstruction{strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Errorf("Dockerfile: %s before FROM", in.cmd)
			}
			return
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			buf.WriteString(l + " ")
			continue
		}
		buf.WriteString(line)
		flush()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	flush()
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a runtime stage", len(stages))
	}
	return stages
}

// fromImage returns the image and stage name of a FROM instruction.
func fromImage(args string) (image, alias string) {
	var words []string
	for _, w := range strings.Fields(args) {
		if !strings.HasPrefix(w, "--") {
			words = append(words, w)
		}
	}
	if len(words) == 0 {
		return "", ""
	}
	if len(words) == 3 && strings.EqualFold(words[1], "AS") {
		alias = words[2]
	}
	return words[0], alias
}

func TestDockerfile(t *testing.T) {
	stages := readDockerfile(t)
	final := stages[len(stages)-1]

	// The runtime stage runs the clickagg binary as a non-root user.
	var entrypoint []string
	var user string
	copied := map[string]bool{}
	for _, in := range final {
		switch in.cmd {
		case "ENTRYPOINT":
			entrypoint = nil
			if err := json.Unmarshal([]byte(in.args), &entrypoint); err != nil {
				t.Errorf("ENTRYPOINT %s: use the exec (JSON) form: %v", in.args, err)
			}
		case "USER":
			user = in.args
		case "COPY":
			if f := strings.Fields(in.args); len(f) >= 3 && strings.HasPrefix(f[0], "--from=") {
				copied[f[len(f)-1]] = true
			}
		}
	}
	if len(entrypoint) == 0 || filepath.Base(entrypoint[0]) != "clickagg" {
		t.Fatalf("final stage ENTRYPOINT = %q, want the clickagg binary", entrypoint)
	}
	if !copied[entrypoint[0]] {
		t.Errorf("final stage does not COPY --from a build stage to %s", entrypoint[0])
	}
	if name, _, _ := strings.Cut(user, ":"); name == "" || name == "root" || name == "0" {
		t.Errorf("final stage USER = %q, want a non-root user", user)
	}
	if img, _ := fromImage(final[0].args); strings.HasPrefix(img, "golang:") {
		t.Errorf("final stage is based on %s; want a small runtime image", img)
	} else if _, tag := splitImage(img); tag == "" || tag == "latest" {
		t.Errorf("final stage image %q is not pinned", img)
	}

	// A build stage compiles ./cmd/clickagg statically (the runtime image is
	// alpine/musl) with the Go version of go.mod.
	goMod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go\s+(\d+\.\d+)`).FindSubmatch(goMod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	wantGo := string(m[1])
	var builds int
	for _, stage := range stages[:len(stages)-1] {
		img, _ := fromImage(stage[0].args)
		name, tag := splitImage(img)
		if name != "golang" && name != "docker.io/library/golang" {
			continue
		}
		builds++
		if v := regexp.MustCompile(`^\d+\.\d+`).FindString(tag); v != wantGo {
			t.Errorf("build stage image %s: Go %q, go.mod says go %s", img, v, wantGo)
		}
		var built bool
		for _, in := range stage {
			if in.cmd == "RUN" && strings.Contains(in.args, "go build") && strings.Contains(in.args, "./cmd/clickagg") {
				built = true
				if !strings.Contains(in.args, "CGO_ENABLED=0") {
					t.Errorf("go build without CGO_ENABLED=0: %s", in.args)
				}
			}
		}
		if !built {
			t.Errorf("build stage %s does not go build ./cmd/clickagg", img)
		}
	}
	if builds == 0 {
		t.Error("no golang build stage")
	}
}

func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			patterns[strings.TrimSuffix(line, "/")] = true
		}
	}
	for _, want := range []string{".git", ".local", "bin"} {
		if !patterns[want] {
			t.Errorf(".dockerignore does not exclude %s/", want)
		}
	}
	// The build needs these; an ignore pattern must not drop them.
	for _, keep := range []string{"go.mod", "go.sum", "cmd", "*.go", "**/*.go", "*"} {
		if patterns[keep] {
			t.Errorf(".dockerignore excludes %s, which the build needs", keep)
		}
	}
}

// TestComposeKafka checks the Kafka wiring: a KRaft broker, the topic
// created before ClickHouse is told to consume it, ClickHouse configured to
// read a new group from the start, and clickagg asking the broker for lag.
func TestComposeKafka(t *testing.T) {
	p := loadProject(t, nil)
	k := service(t, p, "kafka")
	if name, tag := splitImage(k.Image); name != "apache/kafka" || strings.Count(tag, ".") < 1 {
		t.Errorf("kafka image %q: want apache/kafka pinned to major.minor", k.Image)
	}
	if envValue(t, k, "KAFKA_PROCESS_ROLES") != "broker,controller" {
		t.Errorf("kafka is not in KRaft mode")
	}
	if !strings.Contains(envValue(t, k, "KAFKA_ADVERTISED_LISTENERS"), "//kafka:9092") {
		t.Errorf("kafka does not advertise kafka:9092 to the other services")
	}
	setup := service(t, p, "kafka-setup")
	if cmd := strings.Join(setup.Command, " "); !strings.Contains(cmd, "--create") || !strings.Contains(cmd, "--topic ad-events") {
		t.Errorf("kafka-setup command %q does not create ad-events", cmd)
	}
	enable := service(t, p, "kafka-enable")
	if cmd := strings.Join(enable.Command, " "); cmd != "kafka enable --brokers kafka:9092 --topic ad-events --group clickagg" {
		t.Errorf("kafka-enable command %q", cmd)
	}
	for dep, cond := range map[string]string{"clickagg": types.ServiceConditionHealthy, "kafka-setup": types.ServiceConditionCompletedSuccessfully} {
		if d, ok := enable.DependsOn[dep]; !ok || d.Condition != cond {
			t.Errorf("kafka-enable depends_on %s = %+v, want %s", dep, d, cond)
		}
	}
	if envValue(t, service(t, p, "clickagg"), "CLICKAGG_KAFKA_BROKERS") != "kafka:9092" {
		t.Errorf("clickagg cannot read the group's lag")
	}
	mounted := false
	for _, v := range service(t, p, "clickhouse").Volumes {
		if strings.HasSuffix(v.Source, filepath.Join("deploy", "clickhouse", "kafka.xml")) && strings.HasPrefix(v.Target, "/etc/clickhouse-server/config.d/") {
			mounted = true
			b, err := os.ReadFile(v.Source)
			if err != nil || !strings.Contains(string(b), "<auto_offset_reset>earliest</auto_offset_reset>") {
				t.Errorf("%s: %v, want auto_offset_reset earliest", v.Source, err)
			}
		}
	}
	if !mounted {
		t.Errorf("clickhouse does not mount deploy/clickhouse/kafka.xml into config.d")
	}
}

// clickaggMetrics are the series clickagg's GET /metrics exports, besides
// the Go and process collectors' go_* and process_*; histograms also as
// _bucket, _sum and _count.
var clickaggMetrics = map[string]bool{ // name → histogram
	"clickagg_ingest_requests_total":                false,
	"clickagg_ingest_requests_refused_total":        false,
	"clickagg_ingest_events_total":                  false,
	"clickagg_ingest_rejected_events_total":         false,
	"clickagg_ingest_buffered_rows":                 false,
	"clickagg_ingest_committed_rows_total":          false,
	"clickagg_ingest_failed_rows_total":             false,
	"clickagg_ingest_block_rows":                    true,
	"clickagg_ingest_flush_duration_seconds":        true,
	"clickagg_clickhouse_insert_retries_total":      false,
	"clickagg_clickhouse_errors_total":              false,
	"clickagg_http_request_duration_seconds":        true,
	"clickagg_query_duration_seconds":               true,
	"clickagg_query_plan_pieces_total":              false,
	"clickagg_cache_hit_ratio":                      false,
	"clickagg_redis_errors_total":                   false,
	"clickagg_reconcile_drift_rows":                 false,
	"clickagg_reconcile_last_run_timestamp_seconds": false,
	"clickagg_kafka_lag_messages":                   false,
	"clickagg_kafka_drained_messages_total":         false,
	"clickagg_dedup_ids":                            false,
}

// knownMetric returns the clickagg metric name refers to, "go" or
// "process" for the default collectors, or "" when it is none of them.
func knownMetric(name string) string {
	if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
		return name[:strings.IndexByte(name, '_')]
	}
	if _, ok := clickaggMetrics[name]; ok {
		return name
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && clickaggMetrics[base] {
			return base
		}
	}
	return ""
}

var (
	// Parts of a PromQL expression that hold no metric names: strings
	// (label values), Grafana variables, ranges, label matchers, and the
	// label lists of by, without, on, ignoring and group_left/right.
	promQLNoise = []*regexp.Regexp{
		regexp.MustCompile(`"(?:[^"\\]|\\.)*"`),
		regexp.MustCompile(`\$\{[^}]*\}|\$\w+`),
		regexp.MustCompile(`\[[^\]]*\]`),
		regexp.MustCompile(`\{[^}]*\}`),
		regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`),
	}
	// A number or duration (0.99, 1e6, 5m), or a name and whether a
	// call's parenthesis follows it.
	promQLToken    = regexp.MustCompile(`\d[\w.]*|([A-Za-z_:][\w:]*)\s*(\()?`)
	promQLKeywords = []string{"and", "or", "unless", "bool", "offset", "inf", "nan"}
)

// metricNames returns the metric names an expression selects.
func metricNames(expr string) []string {
	for _, re := range promQLNoise {
		expr = re.ReplaceAllString(expr, " ")
	}
	var out []string
	for _, m := range promQLToken.FindAllStringSubmatch(expr, -1) {
		if m[1] != "" && m[2] == "" && !slices.Contains(promQLKeywords, strings.ToLower(m[1])) {
			out = append(out, m[1])
		}
	}
	return out
}

// TestComposeMonitoring checks the monitoring profile: Prometheus and
// Grafana pinned and private, the files they mount present in the
// repository, Prometheus scraping the clickagg service, and the dashboard
// asking only for series clickagg exports, each of them at least once.
func TestComposeMonitoring(t *testing.T) {
	if p := loadProject(t, nil); slices.Contains(p.ServiceNames(), "prometheus") || slices.Contains(p.ServiceNames(), "grafana") {
		t.Error("prometheus or grafana runs without --profile monitoring")
	}
	root := repoRoot(t)
	p := loadProject(t, map[string]string{"GRAFANA_ADMIN_PASSWORD": "s3cret"}, "monitoring")
	mounts := map[string]string{} // bind mounts, target → source
	for name, want := range map[string]struct {
		image string
		port  uint32
	}{"prometheus": {"prom/prometheus", 9090}, "grafana": {"grafana/grafana", 3000}} {
		s := service(t, p, name)
		if image, tag := splitImage(s.Image); image != want.image || !regexp.MustCompile(`^v?\d+\.\d+\.\d+$`).MatchString(tag) {
			t.Errorf("%s image %q: want %s pinned to a release", name, s.Image, want.image)
		}
		if !publishes(s, want.port) {
			t.Errorf("%s: port %d not published", name, want.port)
		}
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if rel, err := filepath.Rel(root, v.Source); err != nil || !filepath.IsLocal(rel) {
				t.Errorf("%s mounts %s, outside the repository", name, v.Source)
			} else if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s: %v", name, rel, err)
			}
			if !v.ReadOnly {
				t.Errorf("%s mounts %s read-write", name, v.Source)
			}
			mounts[v.Target] = v.Source
		}
	}
	for target, src := range map[string]string{
		"/etc/prometheus/prometheus.yml":                       "deploy/prometheus/prometheus.yml",
		"/etc/grafana/provisioning/datasources/prometheus.yml": "deploy/grafana/provisioning/datasources/prometheus.yml",
		"/etc/grafana/provisioning/dashboards/clickagg.yml":    "deploy/grafana/provisioning/dashboards/clickagg.yml",
		"/etc/grafana/dashboards":                              "deploy/grafana/dashboards",
	} {
		if mounts[target] != filepath.Join(root, src) {
			t.Errorf("%s is mounted from %q, want %s", target, mounts[target], src)
		}
	}
	if prom := service(t, p, "prometheus"); !slices.Contains(prom.Command, "--config.file=/etc/prometheus/prometheus.yml") {
		t.Errorf("prometheus command %q does not read /etc/prometheus/prometheus.yml", prom.Command)
	}
	graf := service(t, p, "grafana")
	if v := envValue(t, graf, "GF_AUTH_ANONYMOUS_ENABLED"); v != "false" {
		t.Errorf("GF_AUTH_ANONYMOUS_ENABLED = %q, want false", v)
	}
	if v := envValue(t, graf, "GF_SECURITY_ADMIN_PASSWORD"); v != "s3cret" {
		t.Errorf("GF_SECURITY_ADMIN_PASSWORD = %q, want the GRAFANA_ADMIN_PASSWORD override", v)
	}

	// Prometheus scrapes the clickagg service on its listen port, and
	// Grafana finds Prometheus and the dashboards where compose puts them.
	read := func(rel string) string {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	_, port, _ := net.SplitHostPort(envValue(t, service(t, p, "clickagg"), "CLICKAGG_LISTEN"))
	if cfg := read("deploy/prometheus/prometheus.yml"); !regexp.MustCompile(`(?m)^\s*- targets: \[.*"clickagg:` + port + `"`).MatchString(cfg) {
		t.Errorf("deploy/prometheus/prometheus.yml does not scrape clickagg:%s", port)
	}
	if ds := read("deploy/grafana/provisioning/datasources/prometheus.yml"); !strings.Contains(ds, "url: http://prometheus:9090") || !strings.Contains(ds, "uid: prometheus") {
		t.Error("the Grafana data source is not http://prometheus:9090 with uid prometheus")
	}
	if prov := read("deploy/grafana/provisioning/dashboards/clickagg.yml"); !strings.Contains(prov, "path: /etc/grafana/dashboards") {
		t.Error("the dashboard provider does not read /etc/grafana/dashboards")
	}

	var dash struct {
		UID        string
		Title      string
		Templating struct {
			List []struct{ Name, Type, Definition string }
		}
	}
	text := read("deploy/grafana/dashboards/clickagg.json")
	if err := json.Unmarshal([]byte(text), &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("dashboard has no uid or title")
	}
	var rows []string
	var exprs []string
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["type"] == "row" {
				rows = append(rows, fmt.Sprint(v["title"]))
			}
			if ds, ok := v["datasource"].(map[string]any); ok && ds["type"] == "prometheus" && ds["uid"] != "${DS_PROMETHEUS}" && ds["uid"] != "prometheus" {
				t.Errorf("data source %v: want uid ${DS_PROMETHEUS} or prometheus", ds)
			}
			for k, x := range v {
				walk(k, x)
			}
		case []any:
			for _, x := range v {
				walk(key, x)
			}
		case string:
			if key == "expr" {
				exprs = append(exprs, v)
			}
		}
	}
	var doc any
	json.Unmarshal([]byte(text), &doc)
	walk("", doc)
	for _, want := range []string{"Ingest", "Query", "Correctness", "Process"} {
		if !slices.Contains(rows, want) {
			t.Errorf("dashboard has no %s row (rows: %q)", want, rows)
		}
	}
	for _, v := range dash.Templating.List {
		if m := regexp.MustCompile(`label_values\(([\w:]+)`).FindStringSubmatch(v.Definition); m != nil {
			exprs = append(exprs, m[1])
		}
	}
	if len(exprs) == 0 {
		t.Fatal("dashboard has no expr")
	}
	used := map[string]bool{}
	for _, e := range exprs {
		names := metricNames(e)
		if len(names) == 0 {
			t.Errorf("expr %q selects no metric", e)
		}
		for _, n := range names {
			k := knownMetric(n)
			if k == "" {
				t.Errorf("expr %q: %s is not a metric clickagg exports", e, n)
			}
			used[k] = true
		}
	}
	for name := range clickaggMetrics {
		if !used[name] {
			t.Errorf("dashboard does not show %s", name)
		}
	}
}

// TestComposeAnalyst checks the read-only analyst login on the modern
// server: deploy/clickhouse/analyst.sh is mounted where the image's
// entrypoint runs it, CLICKAGG_ANALYST_PASSWORD reaches the clickhouse
// service, and the script, run against a stand-in clickhouse-client (no
// Docker here), creates the user with the limits of services/analyst.go
// (which the 18.16 tests check on a real server), keeps a generated
// password and takes one from the environment.
func TestComposeAnalyst(t *testing.T) {
	root := repoRoot(t)
	script := filepath.Join(root, "deploy", "clickhouse", "analyst.sh")
	p := loadProject(t, nil)
	ch := service(t, p, "clickhouse")
	mounted := false
	for _, v := range ch.Volumes {
		if v.Source == script {
			mounted = true
			if !strings.HasPrefix(v.Target, "/docker-entrypoint-initdb.d/") || !strings.HasSuffix(v.Target, ".sh") || !v.ReadOnly {
				t.Errorf("analyst.sh mounted at %s (read-only %v), want a read-only *.sh in /docker-entrypoint-initdb.d/", v.Target, v.ReadOnly)
			}
		}
	}
	if !mounted {
		t.Error("clickhouse does not mount deploy/clickhouse/analyst.sh")
	}
	if v := envValue(t, ch, "CLICKAGG_ANALYST_PASSWORD"); v != "" {
		t.Errorf("CLICKAGG_ANALYST_PASSWORD = %q by default, want empty (a generated password)", v)
	}
	p = loadProject(t, map[string]string{"CLICKAGG_ANALYST_PASSWORD": "s3cret"})
	if v := envValue(t, service(t, p, "clickhouse"), "CLICKAGG_ANALYST_PASSWORD"); v != "s3cret" {
		t.Errorf("CLICKAGG_ANALYST_PASSWORD = %q, want the override", v)
	}

	// The stand-in client records its arguments and the SQL it is given.
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	stub := "#!/bin/sh\nprintf '%s\\n' \"$@\" >\"$STUB_OUT.args\"\ncat >\"$STUB_OUT.sql\"\n"
	if err := os.WriteFile(filepath.Join(bin, "clickhouse-client"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "analyst_password")
	env := map[string]string{"CLICKHOUSE_DB": envValue(t, ch, "CLICKHOUSE_DB"), "CLICKHOUSE_USER": envValue(t, ch, "CLICKHOUSE_USER"), "CLICKHOUSE_PASSWORD": "admin pw"}
	type run struct{ args, sql, password string }
	// sourced runs the script the way the entrypoint does when it is not
	// executable: sourced into a bash with set -eo pipefail.
	runScript := func(t *testing.T, sourced bool, extra map[string]string) (run, error) {
		t.Helper()
		out := filepath.Join(dir, "out")
		cmd := exec.Command("bash", script)
		if sourced {
			cmd = exec.Command("bash", "-c", `set -eo pipefail; shopt -s nullglob; . "$1"; echo sourced-ok`, "entrypoint", script)
		}
		cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "STUB_OUT=" + out, "CLICKAGG_ANALYST_PASSWORD_FILE=" + pwFile}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		for k, v := range extra {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		msg, err := cmd.CombinedOutput()
		if err != nil {
			return run{}, fmt.Errorf("%v: %s", err, msg)
		}
		if sourced && !strings.Contains(string(msg), "sourced-ok") {
			t.Errorf("sourcing analyst.sh ended the entrypoint: %s", msg)
		}
		var r run
		for _, f := range []struct {
			dst  *string
			path string
		}{{&r.args, out + ".args"}, {&r.sql, out + ".sql"}, {&r.password, pwFile}} {
			b, err := os.ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			*f.dst = string(b)
		}
		r.password = strings.TrimSuffix(r.password, "\n")
		if fi, err := os.Stat(pwFile); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", pwFile, err, fi)
		}
		return r, nil
	}
	hashOf := func(pw string) string {
		sum := sha256.Sum256([]byte(pw))
		return hex.EncodeToString(sum[:])
	}

	first, err := runScript(t, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(first.password) {
		t.Errorf("generated password %q, want 128 random bits in hex", first.password)
	}
	if args := strings.Fields(first.args); !slices.Equal(args, []string{"--host", "127.0.0.1", "--user", "clickagg", "--password", "admin", "pw", "--multiquery"}) {
		t.Errorf("client arguments %q", first.args)
	}
	sql := first.sql
	for _, want := range []string{
		"CREATE ROLE IF NOT EXISTS analyst_role;",
		"GRANT SELECT ON clickagg.* TO analyst_role;",
		"CREATE USER IF NOT EXISTS analyst IDENTIFIED WITH sha256_hash BY '" + hashOf(first.password) + "';",
		"ALTER USER analyst IDENTIFIED WITH sha256_hash BY '" + hashOf(first.password) + "' HOST ANY DEFAULT DATABASE clickagg SETTINGS PROFILE 'analyst_profile';",
		"GRANT analyst_role TO analyst;",
		"ALTER USER analyst DEFAULT ROLE analyst_role;",
	} {
		if !strings.Contains(sql, want+"\n") {
			t.Errorf("SQL lacks %s\n%s", want, sql)
		}
	}
	if strings.Contains(sql, first.password) {
		t.Error("the SQL holds the password in clear")
	}

	// The same limits as the local servers, in the same order.
	settingsOf := func(list string) []services.Setting {
		var out []services.Setting
		for _, kv := range strings.Split(list, ", ") {
			k, v, _ := strings.Cut(kv, " = ")
			out = append(out, services.Setting{Name: k, Value: strings.Trim(v, "'")})
		}
		return out
	}
	m := regexp.MustCompile(`(?m)^ALTER SETTINGS PROFILE analyst_profile SETTINGS (.+);$`).FindStringSubmatch(sql)
	if m == nil {
		t.Fatalf("no ALTER SETTINGS PROFILE in\n%s", sql)
	}
	if got := settingsOf(m[1]); !slices.Equal(got, services.AnalystProfile) {
		t.Errorf("profile settings %v\nwant (services.AnalystProfile) %v", got, services.AnalystProfile)
	}
	m = regexp.MustCompile(`(?m)^ALTER QUOTA analyst_quota KEYED BY user_name FOR INTERVAL (\d+) (second|minute|hour) MAX (.+) TO analyst;$`).FindStringSubmatch(sql)
	if m == nil {
		t.Fatalf("no ALTER QUOTA in\n%s", sql)
	}
	n, _ := strconv.Atoi(m[1])
	if secs := n * map[string]int{"second": 1, "minute": 60, "hour": 3600}[m[2]]; secs != services.AnalystQuotaInterval {
		t.Errorf("quota interval %s %s, want %d s", m[1], m[2], services.AnalystQuotaInterval)
	}
	if got := settingsOf(m[3]); !slices.Equal(got, services.AnalystQuota) {
		t.Errorf("quota limits %v\nwant (services.AnalystQuota) %v", got, services.AnalystQuota)
	}

	// Run again, sourced this time: the kept password, the same SQL.
	again, err := runScript(t, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.password != first.password || again.sql != first.sql {
		t.Errorf("second run: password %q (was %q), SQL changed: %v", again.password, first.password, again.sql != first.sql)
	}
	// A password from the environment wins and is kept.
	odd := `it's "odd" $HOME`
	fromEnv, err := runScript(t, false, map[string]string{"CLICKAGG_ANALYST_PASSWORD": odd})
	if err != nil {
		t.Fatal(err)
	}
	if fromEnv.password != odd || !strings.Contains(fromEnv.sql, "BY '"+hashOf(odd)+"'") {
		t.Errorf("with CLICKAGG_ANALYST_PASSWORD: kept %q, SQL\n%s", fromEnv.password, fromEnv.sql)
	}
	if _, err := runScript(t, false, map[string]string{"CLICKHOUSE_DB": "x; DROP"}); err == nil {
		t.Error("a CLICKHOUSE_DB that is not an identifier was used")
	}
}

// clickaggNeeds are the addresses each clickagg command reaches, as
// environment variables, with the image of the service each must name and
// its port there.
var clickaggNeeds = map[string]map[string][2]string{
	"serve": {
		"CLICKAGG_CLICKHOUSE_HTTP":   {"clickhouse/clickhouse-server", "8123"},
		"CLICKAGG_CLICKHOUSE_NATIVE": {"clickhouse/clickhouse-server", "9000"},
		"CLICKAGG_REDIS_ADDR":        {"redis", "6379"},
		"CLICKAGG_KAFKA_BROKERS":     {"apache/kafka", "9092"},
	},
	"kafka": {
		"CLICKAGG_CLICKHOUSE_HTTP":   {"clickhouse/clickhouse-server", "8123"},
		"CLICKAGG_CLICKHOUSE_NATIVE": {"clickhouse/clickhouse-server", "9000"}, // enable, status and verify use only this one
		"CLICKAGG_KAFKA_BROKERS":     {"apache/kafka", "9092"},
	},
	"generate": {},
}

// hostPort is the host:port of an address or of a URL.
func hostPort(v string) string {
	if u, err := url.Parse(v); err == nil && strings.Contains(v, "://") {
		return u.Host
	}
	return v
}

// TestComposeClickaggAddresses: every service that runs clickagg gets every
// address its command needs, pointing at the compose services (not at
// 127.0.0.1 inside its own container), with the credentials and database
// the ClickHouse container creates; and the addresses on its command line
// name services too.
func TestComposeClickaggAddresses(t *testing.T) {
	p := loadProject(t, nil, "demo", "cluster")
	runs := 0
	for _, s := range p.Services {
		if s.Image != "clickagg:dev" {
			continue
		}
		runs++
		if len(s.Command) == 0 {
			t.Errorf("%s: runs clickagg without a command", s.Name)
			continue
		}
		needs, ok := clickaggNeeds[s.Command[0]]
		if !ok {
			t.Errorf("%s: command %q: add what it needs to clickaggNeeds", s.Name, s.Command)
			continue
		}
		ch := types.ServiceConfig{}
		for key, want := range needs {
			// A cluster's native addresses are a list, tried in order.
			for _, addr := range strings.Split(envValue(t, s, key), ",") {
				host, port, err := net.SplitHostPort(hostPort(addr))
				target, known := p.Services[host]
				if name, _ := splitImage(target.Image); err != nil || !known || name != want[0] || port != want[1] {
					t.Errorf("%s: %s = %q, want a %s service's port %s", s.Name, key, envValue(t, s, key), want[0], want[1])
				}
				if key == "CLICKAGG_CLICKHOUSE_NATIVE" && ch.Name == "" {
					ch = target
				}
			}
		}
		if _, ok := needs["CLICKAGG_CLICKHOUSE_NATIVE"]; ok && ch.Name != "" {
			for appKey, chKey := range map[string]string{
				"CLICKAGG_CLICKHOUSE_DATABASE": "CLICKHOUSE_DB",
				"CLICKAGG_CLICKHOUSE_USER":     "CLICKHOUSE_USER",
				"CLICKAGG_CLICKHOUSE_PASSWORD": "CLICKHOUSE_PASSWORD",
			} {
				if a, c := envValue(t, s, appKey), envValue(t, ch, chKey); a != c {
					t.Errorf("%s: %s = %q but clickhouse %s = %q", s.Name, appKey, a, chKey, c)
				}
			}
		}
		for i, arg := range s.Command {
			if !slices.Contains([]string{"--target", "--kafka", "--brokers"}, arg) || i+1 == len(s.Command) {
				continue
			}
			host, _, err := net.SplitHostPort(hostPort(s.Command[i+1]))
			if _, known := p.Services[host]; err != nil || !known {
				t.Errorf("%s: %s %s does not name a compose service", s.Name, arg, s.Command[i+1])
			}
		}
	}
	if runs < 5 {
		t.Errorf("%d services run clickagg, want clickagg, kafka-enable, the two generators and clickagg-cluster", runs)
	}
}

// TestComposeClickHouseHealthcheck: ClickHouse is healthy only when what
// clickagg needs answers at the service's address. The check is run here
// against real servers (18.16, with this machine's own non-loopback address
// for the service's name): one listening on 127.0.0.1 only, as the image's
// first-boot server does, must fail it; one listening on every address must
// pass.
func TestComposeClickHouseHealthcheck(t *testing.T) {
	p := loadProject(t, nil)
	hc := service(t, p, "clickhouse").HealthCheck
	if hc == nil || len(hc.Test) != 2 || hc.Test[0] != "CMD-SHELL" {
		t.Fatalf("healthcheck %v: want one CMD-SHELL command", hc)
	}
	check := hc.Test[1]
	for _, want := range []string{"clickhouse-client --host clickhouse ", `--user "$CLICKHOUSE_USER"`, `--password "$CLICKHOUSE_PASSWORD"`, `--database "$CLICKHOUSE_DB"`, "http://clickhouse:8123/ping"} {
		if !strings.Contains(check, want) {
			t.Errorf("healthcheck %q lacks %q", check, want)
		}
	}
	for _, loopback := range []string{"127.0.0.1", "localhost", "::1"} {
		if strings.Contains(check, loopback) {
			t.Errorf("healthcheck %q probes %s, where the first-boot server listens", check, loopback)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	ip := ""
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			ip = n.IP.String()
			break
		}
	}
	if ip == "" {
		t.Skip("this machine has no non-loopback IPv4 address to stand for the service's name")
	}
	run := func(ch *services.ClickHouse) error {
		cmd := strings.NewReplacer(
			"--host clickhouse ", "--host "+ip+" --port "+strconv.Itoa(ch.TCPPort)+" ",
			"http://clickhouse:8123", "http://"+net.JoinHostPort(ip, strconv.Itoa(ch.HTTPPort)),
		).Replace(check)
		c := exec.Command("sh", "-c", cmd)
		c.Env = append(os.Environ(), "CLICKHOUSE_USER=default", "CLICKHOUSE_PASSWORD=", "CLICKHOUSE_DB=default")
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	start := func(t *testing.T, listenAll bool) *services.ClickHouse {
		dir := t.TempDir()
		if listenAll {
			// Every address, and the default user from any of them, as in
			// the image.
			for name, xml := range map[string]string{
				"config.d/listen.xml": `<yandex><listen_host replace="replace">0.0.0.0</listen_host></yandex>`,
				"users.d/network.xml": `<yandex><users><default><networks replace="replace"><ip>::/0</ip></networks></default></users></yandex>`,
			} {
				if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, name), []byte(xml), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		ch, err := services.StartClickHouse(context.Background(), dir, 0, 0)
		testenv.Must(t, err)
		t.Cleanup(func() { ch.Kill() })
		return ch
	}
	if err := run(start(t, false)); err == nil {
		t.Error("the healthcheck passed against a server listening on 127.0.0.1 only")
	} else {
		t.Logf("against 127.0.0.1 only: %v", err)
	}
	if err := run(start(t, true)); err != nil {
		t.Errorf("the healthcheck failed against a server listening on every address: %v", err)
	}
}

// clusterXML is what TestComposeCluster reads of deploy/clickhouse/cluster.
type clusterXML struct {
	ZooKeeper struct {
		Node struct {
			Host string `xml:"host"`
			Port string `xml:"port"`
		} `xml:"node"`
	} `xml:"zookeeper"`
	DDL     string `xml:"distributed_ddl>path"`
	Servers struct {
		Clusters []struct {
			XMLName xml.Name
			Shards  []struct {
				Internal string `xml:"internal_replication"`
				Replicas []struct {
					Host     string `xml:"host"`
					Port     string `xml:"port"`
					User     string `xml:"user"`
					Password struct {
						FromEnv string `xml:"from_env,attr"`
					} `xml:"password"`
				} `xml:"replica"`
			} `xml:"shard"`
		} `xml:",any"`
	} `xml:"remote_servers"`
	Macros struct {
		Cluster string `xml:"cluster"`
		Shard   string `xml:"shard"`
		Replica string `xml:"replica"`
	} `xml:"macros"`
	InterserverHost string `xml:"interserver_http_host"`
	Keeper          struct {
		TCPPort string `xml:"tcp_port"`
		Servers []struct {
			Hostname string `xml:"hostname"`
		} `xml:"raft_configuration>server"`
	} `xml:"keeper_server"`
}

func readClusterXML(t *testing.T, path string) clusterXML {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c clusterXML
	if err := xml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// TestComposeCluster: the cluster profile's Keeper, four nodes and clickagg
// agree with each other: remote_servers names the node services by their
// host names, each node mounts the shared cluster config and macros whose
// shard and replica are its place there (replica names unique), Keeper is
// where the nodes look for it, and clickagg-cluster's shards are
// remote_servers' in order, with a Redis database of its own.
func TestComposeCluster(t *testing.T) {
	p := loadProject(t, nil, "cluster")
	single := service(t, p, "clickhouse")
	c := readClusterXML(t, filepath.Join(repoRoot(t), "deploy", "clickhouse", "cluster", "cluster.xml"))
	if len(c.Servers.Clusters) != 1 || c.Servers.Clusters[0].XMLName.Local != "clickagg" {
		t.Fatalf("remote_servers: want one cluster named clickagg, got %+v", c.Servers.Clusters)
	}
	keeper := service(t, p, "keeper")
	k := readClusterXML(t, filepath.Join(repoRoot(t), "deploy", "clickhouse", "cluster", "keeper.xml"))
	if c.ZooKeeper.Node.Host != keeper.Hostname || c.ZooKeeper.Node.Port != k.Keeper.TCPPort || len(k.Keeper.Servers) != 1 || k.Keeper.Servers[0].Hostname != keeper.Hostname {
		t.Errorf("the nodes look for Keeper at %s:%s; Keeper is %s, port %s, raft %+v", c.ZooKeeper.Node.Host, c.ZooKeeper.Node.Port, keeper.Hostname, k.Keeper.TCPPort, k.Keeper.Servers)
	}
	if c.DDL == "" {
		t.Error("no distributed_ddl path: ON CLUSTER statements would not run")
	}
	var shards, natives []string
	replicas := map[string]bool{}
	for si, shard := range c.Servers.Clusters[0].Shards {
		if shard.Internal != "true" {
			t.Errorf("shard %d: internal_replication %q, want true (the tables replicate themselves)", si+1, shard.Internal)
		}
		var urls []string
		for _, r := range shard.Replicas {
			node := service(t, p, r.Host)
			urls = append(urls, "http://"+r.Host+":8123")
			natives = append(natives, r.Host+":9000")
			if node.Hostname != r.Host || node.Image != single.Image || r.Port != "9000" || r.User != envValue(t, node, "CLICKHOUSE_USER") || r.Password.FromEnv != "CLICKHOUSE_PASSWORD" {
				t.Errorf("replica %s: hostname %q, image %q, port %s, user %q, password from %q", r.Host, node.Hostname, node.Image, r.Port, r.User, r.Password.FromEnv)
			}
			if d, ok := node.DependsOn["keeper"]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s does not wait for Keeper", r.Host)
			}
			mounts := map[string]string{}
			for _, v := range node.Volumes {
				mounts[v.Target] = v.Source
			}
			if !strings.HasSuffix(mounts["/etc/clickhouse-server/config.d/cluster.xml"], filepath.Join("cluster", "cluster.xml")) {
				t.Errorf("%s does not mount cluster.xml", r.Host)
			}
			macros := mounts["/etc/clickhouse-server/config.d/macros.xml"]
			if macros == "" {
				t.Errorf("%s mounts no macros", r.Host)
				continue
			}
			m := readClusterXML(t, macros)
			if m.Macros.Shard != fmt.Sprintf("%02d", si+1) || m.Macros.Cluster != "clickagg" || m.InterserverHost != r.Host || replicas[m.Macros.Replica] {
				t.Errorf("%s: macros %+v, interserver host %q; want shard %02d, a replica name of its own, its host name", r.Host, m.Macros, m.InterserverHost, si+1)
			}
			replicas[m.Macros.Replica] = true
		}
		shards = append(shards, strings.Join(urls, ","))
	}
	if len(shards) != 2 || len(replicas) != 4 {
		t.Errorf("%d shards, %d replicas: want 2 x 2", len(shards), len(replicas))
	}
	app := service(t, p, "clickagg-cluster")
	if got := envValue(t, app, "CLICKAGG_CLICKHOUSE_SHARDS"); got != strings.Join(shards, " ") {
		t.Errorf("CLICKAGG_CLICKHOUSE_SHARDS = %q, want remote_servers' order %q", got, strings.Join(shards, " "))
	}
	if got := envValue(t, app, "CLICKAGG_CLICKHOUSE_NATIVE"); got != strings.Join(natives, ",") {
		t.Errorf("CLICKAGG_CLICKHOUSE_NATIVE = %q, want every node %q, so that queries go on when one is down", got, strings.Join(natives, ","))
	}
	if envValue(t, app, "CLICKAGG_CLICKHOUSE_CLUSTER") != "clickagg" {
		t.Error("clickagg-cluster does not name the cluster")
	}
	for _, node := range []string{"ch-s1r1", "ch-s1r2", "ch-s2r1", "ch-s2r2", "redis"} {
		if d, ok := app.DependsOn[node]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("clickagg-cluster does not wait for %s to be healthy", node)
		}
	}
	if db := envValue(t, app, "CLICKAGG_REDIS_DB"); db == "" || db == "0" {
		t.Errorf("clickagg-cluster caches in Redis database %q, the single server's: their answers would mix", db)
	}
	// The cluster consumes the topic on every node, as a group of its own:
	// sharing the single server's group would split the topic between them.
	ke, kc := service(t, p, "kafka-enable"), service(t, p, "kafka-enable-cluster")
	if envValue(t, kc, "CLICKAGG_CLICKHOUSE_CLUSTER") != "clickagg" || flagValue(kc.Command, "--group") == flagValue(ke.Command, "--group") {
		t.Errorf("kafka-enable-cluster: cluster %q, group %q (the single server's: %q)", envValue(t, kc, "CLICKAGG_CLICKHOUSE_CLUSTER"), flagValue(kc.Command, "--group"), flagValue(ke.Command, "--group"))
	}
	if !slices.Contains(p.Services["clickagg-cluster"].Profiles, "cluster") {
		t.Error("clickagg-cluster runs without the cluster profile")
	}
}

// flagValue is the argument after name in a command, "" if absent.
func flagValue(cmd []string, name string) string {
	if i := slices.Index(cmd, name); i >= 0 && i+1 < len(cmd) {
		return cmd[i+1]
	}
	return ""
}

// TestComposeSeveral: the several profile runs two clickagg replicas with
// the shared duplicate check on a database and Redis cache database of
// their own, migrated once before they start, behind an nginx that spreads
// requests over them and sends a request one did not answer to the other.
func TestComposeSeveral(t *testing.T) {
	p := loadProject(t, nil, "several")
	single := service(t, p, "clickagg")
	app := service(t, p, "clickagg-several")
	mig := service(t, p, "migrate-several")
	if app.Deploy == nil || app.Deploy.Replicas == nil || *app.Deploy.Replicas < 2 {
		t.Errorf("clickagg-several deploy %+v: want 2 replicas or more", app.Deploy)
	}
	if len(app.Ports) != 0 {
		t.Errorf("clickagg-several publishes ports %v: replicas cannot share a host port; the load balancer does", app.Ports)
	}
	if envValue(t, app, "CLICKAGG_DEDUP_SHARED") != "true" {
		t.Error("clickagg-several does not hold event ids across its replicas (CLICKAGG_DEDUP_SHARED)")
	}
	db := envValue(t, app, "CLICKAGG_CLICKHOUSE_DATABASE")
	if db == "" || db == envValue(t, single, "CLICKAGG_CLICKHOUSE_DATABASE") {
		t.Errorf("clickagg-several uses database %q, the single instance's: that one does not share its duplicate check", db)
	}
	if r := envValue(t, app, "CLICKAGG_REDIS_DB"); r == "" || r == "0" {
		t.Errorf("clickagg-several caches in Redis database %q, the single instance's", r)
	}
	if got := envValue(t, mig, "CLICKAGG_CLICKHOUSE_DATABASE"); got != db || len(mig.Command) < 2 || mig.Command[0] != "migrate" || mig.Command[1] != "up" {
		t.Errorf("migrate-several: %v on %q, want migrate up on %q", mig.Command, got, db)
	}
	for _, arg := range app.Command {
		if arg == "--migrate" {
			t.Error("clickagg-several migrates itself: two replicas would race; migrate-several does it once")
		}
	}
	if d, ok := app.DependsOn["migrate-several"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Error("clickagg-several does not wait for migrate-several to finish")
	}
	for _, dep := range []string{"clickhouse", "redis"} {
		if d, ok := app.DependsOn[dep]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("clickagg-several does not wait for %s to be healthy", dep)
		}
	}

	lb := service(t, p, "lb-several")
	if name, tag := splitImage(lb.Image); name != "nginx" || tag == "" || tag == "latest" {
		t.Errorf("lb-several image %q: want nginx pinned to a release", lb.Image)
	}
	if len(lb.Ports) != 1 || lb.Ports[0].Published != "8082" || lb.Ports[0].HostIP != "127.0.0.1" {
		t.Errorf("lb-several ports %+v: want 127.0.0.1:8082", lb.Ports)
	}
	var conf string
	for _, v := range lb.Volumes {
		if v.Target == "/etc/nginx/conf.d/default.conf" {
			conf = v.Source
		}
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatalf("lb-several's nginx configuration: %v", err)
	}
	text := string(b)
	for _, want := range []string{
		fmt.Sprintf("listen %d;", lb.Ports[0].Target),
		"server clickagg-several:8080",
		"proxy_pass http://clickagg;",
		"non_idempotent", // a POST nobody answered goes to the other replica
		"http_503",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("%s lacks %q", conf, want)
		}
	}
	if d, ok := lb.DependsOn["clickagg-several"]; !ok || d.Condition != types.ServiceConditionHealthy {
		t.Error("lb-several does not wait for clickagg-several to be healthy")
	}
}
