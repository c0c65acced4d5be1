package connmgr_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// The deployment files: docker-compose.yml, .env.example and the
// Dockerfile. No Docker engine is needed; `docker compose config` runs too
// when the docker client has the compose plugin.

const (
	composeFile = "docker-compose.yml"
	envExample  = ".env.example"
)

// requiredSecrets are the variables compose must refuse to start without.
var requiredSecrets = []string{"POSTGRES_PASSWORD", "CONNMGR_ENCRYPTION_KEYS", "CONNMGR_ADMIN_TOKEN"}

// exampleEnv returns .env.example as compose reads it.
func exampleEnv(t *testing.T) types.Mapping {
	t.Helper()
	env, err := dotenv.GetEnvFromFile(types.Mapping{}, []string{envExample})
	if err != nil {
		t.Fatalf("read %s: %v", envExample, err)
	}
	return env
}

// loadCompose loads docker-compose.yml as `docker compose config` does,
// with env as the whole environment (the test's own is not used).
func loadCompose(t *testing.T, env types.Mapping, opts ...func(*loader.Options)) (*types.Project, error) {
	t.Helper()
	content, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return loader.LoadWithContext(ctx, types.ConfigDetails{WorkingDir: wd, Environment: env,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(wd, composeFile), Content: content}}}, opts...)
}

// rawCompose returns the environment of each service of
// docker-compose.yml as written, before interpolation.
func rawCompose(t *testing.T) map[string]map[string]string {
	t.Helper()
	content, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	model, err := loader.LoadModelWithContext(ctx, types.ConfigDetails{WorkingDir: mustGetwd(t),
		ConfigFiles: []types.ConfigFile{{Filename: composeFile, Content: content}}},
		func(o *loader.Options) {
			o.SkipInterpolation, o.SkipNormalization, o.SkipValidation, o.SkipConsistencyCheck = true, true, true, true
			o.SetProjectName("connmgr", true)
		})
	if err != nil {
		t.Fatalf("load %s as written: %v", composeFile, err)
	}
	out := map[string]map[string]string{}
	services, _ := model["services"].(map[string]any)
	for name, s := range services {
		out[name] = map[string]string{}
		svc, _ := s.(map[string]any)
		switch env := svc["environment"].(type) {
		case map[string]any:
			for k, v := range env {
				out[name][k], _ = v.(string)
			}
		case []any:
			for _, kv := range env {
				k, v, _ := strings.Cut(kv.(string), "=")
				out[name][k] = v
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s as written has no services: %v", composeFile, model)
	}
	return out
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("%s has no service %q: %v", composeFile, name, err)
	}
	return s
}

func env(s types.ServiceConfig, name string) string {
	if v := s.Environment[name]; v != nil {
		return *v
	}
	return ""
}

// hasVolume reports whether s mounts the named volume at target.
func hasVolume(s types.ServiceConfig, volume, target string) bool {
	return slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeVolume && v.Source == volume && v.Target == target
	})
}

func TestComposeFile(t *testing.T) {
	e := exampleEnv(t)
	p, err := loadCompose(t, e)
	if err != nil {
		t.Fatalf("%s does not load with %s: %v", composeFile, envExample, err)
	}
	if got := p.ServiceNames(); !slices.Equal(sorted(got), []string{"connmgr", "postgres"}) {
		t.Errorf("services = %v, want connmgr and postgres", got)
	}
	for _, v := range []string{"pgdata", "connmgr-data"} {
		if _, ok := p.Volumes[v]; !ok {
			t.Errorf("named volume %q is not declared (volumes: %v)", v, p.VolumeNames())
		}
	}

	pg := service(t, p, "postgres")
	cm := service(t, p, "connmgr")
	checks := []struct {
		name string
		ok   bool
		got  any
	}{
		{"postgres image is postgres:16", pg.Image == "postgres:16", pg.Image},
		{"postgres health check runs pg_isready", pg.HealthCheck != nil && strings.Contains(strings.Join(pg.HealthCheck.Test, " "), "pg_isready"), pg.HealthCheck},
		{"postgres keeps its data in the pgdata volume", hasVolume(pg, "pgdata", "/var/lib/postgresql/data"), pg.Volumes},
		{"postgres password comes from the environment", env(pg, "POSTGRES_PASSWORD") == e["POSTGRES_PASSWORD"], env(pg, "POSTGRES_PASSWORD")},
		{"postgres publishes no port", len(pg.Ports) == 0, pg.Ports},

		{"connmgr is built from the Dockerfile here", cm.Build != nil && cm.Build.Context != "" && filepath.Base(cm.Build.Context) == filepath.Base(mustGetwd(t)), cm.Build},
		{"connmgr waits for postgres to be healthy", cm.DependsOn["postgres"].Condition == types.ServiceConditionHealthy, cm.DependsOn},
		{"connmgr health check asks /readyz", cm.HealthCheck != nil && strings.Contains(strings.Join(cm.HealthCheck.Test, " "), "http://127.0.0.1:8080/readyz"), cm.HealthCheck},
		{"connmgr publishes 8080", len(cm.Ports) == 1 && cm.Ports[0].Target == 8080 && cm.Ports[0].Published == "8080", cm.Ports},
		{"connmgr root filesystem is read-only", cm.ReadOnly, cm.ReadOnly},
		{"connmgr keeps /data in the connmgr-data volume", hasVolume(cm, "connmgr-data", "/data"), cm.Volumes},
		{"connmgr restarts unless stopped", cm.Restart == types.RestartPolicyUnlessStopped, cm.Restart},
		{"connmgr gets time to drain (30s grace)", cm.StopGracePeriod != nil && time.Duration(*cm.StopGracePeriod) > 30*time.Second, cm.StopGracePeriod},
		{"connmgr uses the postgres service", env(cm, "CONNMGR_DATABASE_URL") == "postgres://connmgr:"+e["POSTGRES_PASSWORD"]+"@postgres:5432/connmgr?sslmode=disable", env(cm, "CONNMGR_DATABASE_URL")},
		{"connmgr encryption keys come from the environment", env(cm, "CONNMGR_ENCRYPTION_KEYS") == e["CONNMGR_ENCRYPTION_KEYS"], env(cm, "CONNMGR_ENCRYPTION_KEYS")},
		{"connmgr admin token comes from the environment", env(cm, "CONNMGR_ADMIN_TOKEN") == e["CONNMGR_ADMIN_TOKEN"], env(cm, "CONNMGR_ADMIN_TOKEN")},
		{"connmgr public URL is set", env(cm, "CONNMGR_PUBLIC_URL") == e["CONNMGR_PUBLIC_URL"], env(cm, "CONNMGR_PUBLIC_URL")},
		{"connmgr egress allowlist is passed (may be empty)", cm.Environment["CONNMGR_EGRESS_ALLOW"] != nil, cm.Environment["CONNMGR_EGRESS_ALLOW"]},
	}
	for _, v := range []string{"CONNMGR_TOKEN_TIMEOUT", "CONNMGR_MAX_CONNECTIONS", "CONNMGR_READ_TIMEOUT", "CONNMGR_WRITE_TIMEOUT", "CONNMGR_METRICS_ADDR",
		"CONNMGR_IMPORT_IDENTITY"} {
		checks = append(checks, struct {
			name string
			ok   bool
			got  any
		}{"connmgr " + v + " is passed (may be empty)", cm.Environment[v] != nil, cm.Environment[v]})
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: not so, got %+v", c.name, c.got)
		}
	}
}

// TestComposePortRange checks the replicas recipe of docker-compose.yml: a
// host port range gives each of `--scale connmgr=3` its own port.
func TestComposePortRange(t *testing.T) {
	e := exampleEnv(t)
	e["CONNMGR_HOST_PORT"] = "8080-8082"
	p, err := loadCompose(t, e)
	if err != nil {
		t.Fatalf("load with CONNMGR_HOST_PORT=8080-8082: %v", err)
	}
	cm := service(t, p, "connmgr")
	if len(cm.Ports) != 1 || cm.Ports[0].Published != "8080-8082" || cm.Ports[0].Target != 8080 {
		t.Errorf("ports with CONNMGR_HOST_PORT=8080-8082 = %+v, want 8080-8082:8080", cm.Ports)
	}
}

// TestComposeRequiresSecrets checks that compose refuses to start when a
// secret is missing or empty, naming it, instead of starting with none.
func TestComposeRequiresSecrets(t *testing.T) {
	for _, name := range requiredSecrets {
		for _, value := range []string{"unset", "empty"} {
			t.Run(name+"/"+value, func(t *testing.T) {
				e := exampleEnv(t)
				delete(e, name)
				if value == "empty" {
					e[name] = ""
				}
				_, err := loadCompose(t, e)
				if err == nil || !strings.Contains(err.Error(), name) {
					t.Errorf("load with %s %s: error %v, want one naming %s", name, value, err, name)
				}
			})
		}
	}
}

// secretName matches the variables whose values are secrets.
var secretName = regexp.MustCompile(`PASSWORD|SECRET|_TOKEN$|KEYS|DATABASE_URL`)

// TestComposeHasNoSecrets checks that every secret of docker-compose.yml
// is interpolated from the environment, and that fresh random secrets in
// the environment arrive where they belong.
func TestComposeHasNoSecrets(t *testing.T) {
	raw := rawCompose(t)
	seen := 0
	for svc, env := range raw {
		for name, v := range env {
			if !secretName.MatchString(name) {
				continue
			}
			seen++
			if !strings.Contains(v, "${") {
				t.Errorf("service %s: %s is written in %s; take it from the environment (${%s:?...})", svc, name, composeFile, name)
			}
		}
	}
	if seen < 4 {
		t.Errorf("found %d secret variables in %s, want at least POSTGRES_PASSWORD, CONNMGR_DATABASE_URL, CONNMGR_ENCRYPTION_KEYS, CONNMGR_ADMIN_TOKEN", seen, composeFile)
	}

	e := exampleEnv(t)
	random := map[string]string{"POSTGRES_PASSWORD": randomHex(t), "CONNMGR_ENCRYPTION_KEYS": "k9:" + randomBase64(t),
		"CONNMGR_ADMIN_TOKEN": randomBase64(t), "CONNMGR_WEBHOOK_SECRET": randomBase64(t)}
	for k, v := range random {
		e[k] = v
	}
	p, err := loadCompose(t, e)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Services {
		for name, v := range s.Environment {
			if !secretName.MatchString(name) || v == nil || *v == "" {
				continue
			}
			from := slices.ContainsFunc(slices.Collect(maps.Values(random)), func(r string) bool { return strings.Contains(*v, r) })
			if !from {
				t.Errorf("service %s: %s = %q does not come from the environment's secrets", s.Name, name, *v)
			}
		}
	}

	// And nothing that looks like a key or token is in the text.
	text, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`[A-Za-z0-9+/_-]{32,}={0,2}|cmk_[A-Za-z0-9_-]+`).Find(text); m != nil {
		t.Errorf("%s holds what looks like a key or token: %q", composeFile, m)
	}
}

// TestEnvExampleDocumentsEverything checks that .env.example names every
// variable docker-compose.yml reads and every CONNMGR_* setting of connmgr
// serve (the entries of settingList in cmd/connmgr/config.go; variables of
// tests and of the CLI client are not settings of the service).
func TestEnvExampleDocumentsEverything(t *testing.T) {
	example, err := os.ReadFile(envExample)
	if err != nil {
		t.Fatal(err)
	}
	compose, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	config, err := os.ReadFile(filepath.Join("cmd", "connmgr", "config.go"))
	if err != nil {
		t.Fatal(err)
	}
	assigned := exampleEnv(t)
	for _, m := range regexp.MustCompile(`\$\{([A-Z0-9_]+)`).FindAllSubmatch(compose, -1) {
		if _, ok := assigned[string(m[1])]; !ok {
			t.Errorf("%s reads %s, which %s does not set", composeFile, m[1], envExample)
		}
	}
	settings := regexp.MustCompile(`\{"[a-z-]+", "(CONNMGR_[A-Z0-9_]+)"`).FindAllSubmatch(config, -1)
	if len(settings) < 10 {
		t.Fatalf("found %d settings in cmd/connmgr/config.go, want every one of settingList", len(settings))
	}
	for _, m := range settings {
		if !bytes.Contains(example, m[1]) {
			t.Errorf("connmgr reads %s (cmd/connmgr/config.go), which %s does not mention", m[1], envExample)
		}
	}
	// How to make the secrets.
	for _, want := range []string{"connmgr keys generate", "openssl rand"} {
		if !bytes.Contains(example, []byte(want)) {
			t.Errorf("%s does not say how to generate secrets with %q", envExample, want)
		}
	}
}

// TestEnvExamplePlaceholdersRefused checks that connmgr does not start
// with the placeholder secrets of .env.example, so that a copied but
// unedited .env cannot run with publicly known credentials.
func TestEnvExamplePlaceholdersRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds connmgr")
	}
	bin := filepath.Join(t.TempDir(), "connmgr")
	build := exec.Command("go", "build", "-o", bin, "./cmd/connmgr")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	e := exampleEnv(t)
	valid := map[string]string{"CONNMGR_ENCRYPTION_KEYS": "k1:" + randomBase64(t), "CONNMGR_ADMIN_TOKEN": randomBase64(t)}
	for _, name := range []string{"CONNMGR_ENCRYPTION_KEYS", "CONNMGR_ADMIN_TOKEN"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve")
			cmd.Env = []string{"CONNMGR_ADDR=127.0.0.1:0", "CONNMGR_DATA_DIR=" + t.TempDir()}
			for k, v := range valid {
				if k == name {
					v = e[k] // the placeholder
				}
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			out, err := cmd.CombinedOutput()
			if err == nil || !bytes.Contains(out, []byte(name)) {
				t.Errorf("connmgr serve with the %s placeholder %q: %v, output %s; want a refusal naming %s", name, e[name], err, out, name)
			}
		})
	}
}

// dockerfile is the instructions of a Dockerfile by stage, continuation
// lines joined and comments dropped.
type dockerfile struct {
	stages [][]instruction
}

type instruction struct {
	cmd  string // upper case
	args string
}

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var d dockerfile
	var line strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(text, "#") || (text == "" && line.Len() == 0) {
			continue
		}
		if more, ok := strings.CutSuffix(text, `\`); ok {
			line.WriteString(more + " ")
			continue
		}
		line.WriteString(text)
		full := strings.TrimSpace(line.String())
		line.Reset()
		if full == "" {
			continue
		}
		cmd, args, _ := strings.Cut(full, " ")
		in := instruction{strings.ToUpper(cmd), strings.Join(strings.Fields(args), " ")}
		if in.cmd == "FROM" {
			d.stages = append(d.stages, nil)
		}
		if len(d.stages) == 0 {
			continue // parser directives and global ARGs
		}
		d.stages[len(d.stages)-1] = append(d.stages[len(d.stages)-1], in)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(d.stages) == 0 {
		t.Fatalf("%s has no FROM", path)
	}
	return d
}

// find returns the arguments of every cmd instruction of a stage.
func find(stage []instruction, cmd string) []string {
	var out []string
	for _, in := range stage {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t, "Dockerfile")
	if len(d.stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s), want a build stage and a small final stage", len(d.stages))
	}
	build, final := d.stages[0], d.stages[len(d.stages)-1]
	buildText := strings.Join(append(find(build, "RUN"), find(build, "ENV")...), " ")
	user := find(final, "USER")
	uid, _, _ := strings.Cut(strings.Join(user, ""), ":")
	checks := []struct {
		name string
		ok   bool
		got  any
	}{
		{"builds in golang:1.26", strings.Contains(build[0].args, "golang:1.26"), build[0].args},
		{"builds without cgo", strings.Contains(buildText, "CGO_ENABLED=0"), buildText},
		{"builds with -trimpath and the version", strings.Contains(buildText, "-trimpath") && strings.Contains(buildText, "-X main.version="), buildText},
		{"final image is small", regexp.MustCompile(`^(alpine:3|gcr\.io/distroless/static)`).MatchString(final[0].args), final[0].args},
		{"runs as one fixed non-root user", len(user) == 1 && regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(uid), user},
		{"the user owns /data", slices.ContainsFunc(find(final, "RUN"), func(r string) bool { return strings.Contains(r, "chown "+uid+":") && strings.Contains(r, "/data") }), find(final, "RUN")},
		{"exposes 8080", slices.Contains(find(final, "EXPOSE"), "8080"), find(final, "EXPOSE")},
		{"listens on 0.0.0.0:8080", strings.Contains(strings.Join(find(final, "ENV"), " "), "CONNMGR_ADDR=0.0.0.0:8080"), find(final, "ENV")},
		{"keeps data in /data", strings.Contains(strings.Join(find(final, "ENV"), " "), "CONNMGR_DATA_DIR=/data"), find(final, "ENV")},
		{"declares the /data volume", strings.Contains(strings.Join(find(final, "VOLUME"), " "), "/data"), find(final, "VOLUME")},
		{"health check asks /readyz on 8080", len(find(final, "HEALTHCHECK")) == 1 && strings.Contains(find(final, "HEALTHCHECK")[0], "http://127.0.0.1:8080/readyz"), find(final, "HEALTHCHECK")},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("Dockerfile %s: not so, got %q", c.name, c.got)
		}
	}
}

func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(".dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for _, want := range []string{".git", "data/", "bin/", ".env", "*.test"} {
		if !slices.Contains(lines, want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
	// The build needs the module files and every package's sources.
	for _, line := range lines {
		for _, needed := range []string{"go.mod", "go.sum", "connmgr.go", "cmd/connmgr/main.go", "openapi.yaml"} {
			if ok, _ := filepath.Match(strings.TrimSpace(line), needed); ok && !strings.HasPrefix(line, "!") {
				t.Errorf(".dockerignore line %q excludes %s, which the build needs", line, needed)
			}
		}
	}
}

// TestDockerComposeConfig runs `docker compose config` on the files when
// the docker client has the compose plugin (no engine is needed).
func TestDockerComposeConfig(t *testing.T) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Skip("no docker client on PATH: `docker compose config` is not run (the compose-go checks above still are)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, docker, "compose", "version").CombinedOutput(); err != nil {
		t.Skipf("the docker client has no compose plugin (%v: %s): `docker compose config` is not run (the compose-go checks above still are)",
			err, strings.TrimSpace(string(out)))
	}
	cmd := exec.CommandContext(ctx, docker, "compose", "--env-file", envExample, "-f", composeFile, "config", "-q")
	// Only the env file: no variable of the test's environment may help.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker compose --env-file %s config -q: %v\n%s", envExample, err, out)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func mustGetwd(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

func randomBytes(t *testing.T) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func randomHex(t *testing.T) string    { return hex.EncodeToString(randomBytes(t)[:24]) }
func randomBase64(t *testing.T) string { return base64.StdEncoding.EncodeToString(randomBytes(t)) }
