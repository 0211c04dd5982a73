package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// secret stands for a token: it must never reach the terminal.
const secret = "ghp_s3cretT0ken"

// TestInvalidInput runs command lines with a mistake in them: each exits 2
// with one line on stderr that names what is wrong, contacts nothing, and
// never shows a secret. In args and want, {repo} is a clone of the example
// deploy repository without a remote, {clone} one with a remote ({bare}),
// {dir} a directory that is no repository, {http} the address of an HTTP
// server that must get no request, {leaky} a clone whose remote URL holds
// a token, {samebranch} a repository whose history_branch is main.
func TestInvalidInput(t *testing.T) {
	host := testenv.UntouchedServer(t)
	repo := exampleRepo(t, nil)
	bare := filepath.Join(t.TempDir(), "deploy.git")
	testenv.Git(t, "", "clone", "-q", "--bare", repo, bare)
	clone := filepath.Join(t.TempDir(), "clone")
	testenv.Git(t, "", "clone", "-q", bare, clone)
	leaky := filepath.Join(t.TempDir(), "leaky")
	testenv.Git(t, "", "clone", "-q", bare, leaky)
	testenv.Git(t, leaky, "remote", "set-url", "origin", "https://"+secret+"@"+host+"/acme/deploy.git")
	samebranch := exampleRepo(t, map[string]string{"lieutenant.yaml": strings.Replace(readExample(t, "lieutenant.yaml"), "history_branch: lieutenant/runs", "history_branch: main", 1)})
	places := strings.NewReplacer("{repo}", repo, "{clone}", clone, "{bare}", bare, "{dir}", t.TempDir(),
		"{http}", host, "{leaky}", leaky, "{samebranch}", samebranch)

	cases := []struct {
		args string
		env  map[string]string
		want string // the one line on stderr
	}{
		{args: "--repo {dir} validate",
			want: "lieutenant: --repo {dir}: not a git repository (nor is any of its parents): name a clone, a bare repository or a remote URL"},
		{args: "--repo {dir}/missing validate",
			want: "lieutenant: --repo {dir}/missing: no such file or directory: name a clone, a bare repository or a remote URL"},
		{args: "--repo {repo} --rev nosuchrev validate",
			want: "lieutenant: --rev nosuchrev in {repo}: unknown revision: no branch, tag or commit of that name"},
		{args: "--repo {repo} --rev nosuchrev plan --env staging --offline",
			want: "lieutenant: --rev nosuchrev in {repo}: unknown revision: no branch, tag or commit of that name"},
		{args: "--repo {clone} --branch dev plan --env staging",
			want: "lieutenant: --branch dev: {bare} has no branch of that name"},
		{args: "--repo {repo} --branch dev validate",
			want: "lieutenant: --branch dev: {repo} has no branch of that name"},
		{args: "--repo {repo} plan --env production --env staging --offline",
			want: `lieutenant: plan: invalid value "staging" for flag -env: given twice (production and staging): name one environment (see lieutenant plan --help)`},
		{args: "--repo {repo} history -e staging -e production",
			want: `lieutenant: history: invalid value "production" for flag -e: given twice (staging and production): name one environment (see lieutenant history --help)`},
		{args: "--repo {repo} lock status --env staging --env production",
			want: `lieutenant: lock status: invalid value "production" for flag -env: given twice (staging and production): name one environment (see lieutenant lock status --help)`},
		{args: "--repo {repo} watch --env nope --interval 10ms",
			want: `lieutenant: environment "nope" is not in lieutenant.yaml (known: production, staging)`},
		{args: "--repo {repo} --rev nosuchrev watch --interval 10ms",
			want: "lieutenant: --rev nosuchrev in {repo}: unknown revision: no branch, tag or commit of that name"},
		{args: "--repo https://" + secret + "@{http}/acme/deploy.git validate",
			want: "lieutenant: remote https://REDACTED@{http}/acme/deploy.git: credentials in the URL are refused, so that they never reach a log: use https://{http}/acme/deploy.git (git remote set-url, in a clone) and put the token in LIEUTENANT_GIT_TOKEN"},
		{args: "--repo {leaky} --branch main plan --env staging",
			want: "lieutenant: remote https://REDACTED@{http}/acme/deploy.git: credentials in the URL are refused, so that they never reach a log: use https://{http}/acme/deploy.git (git remote set-url, in a clone) and put the token in LIEUTENANT_GIT_TOKEN"},
		{args: "--repo http://{http}/acme/deploy.git sync --env production", env: map[string]string{"LIEUTENANT_GIT_TOKEN": secret},
			want: "lieutenant: remote http://{http}/acme/deploy.git: LIEUTENANT_GIT_TOKEN would cross the network in clear over http://: use https://{http}/acme/deploy.git (or unset the token for a server that needs none)"},
		{args: "--repo ssh://deploy:" + secret + "@{http}/srv/deploy.git validate",
			want: "lieutenant: remote ssh://deploy:REDACTED@{http}/srv/deploy.git: a password in an SSH URL is refused (it would reach logs, and it is never used): remove it and authenticate with a key (--git-identity or ssh-agent)"},
		{args: "--repo http://{http}/acme/deploy.git plan --env staging --offline",
			want: "lieutenant: --offline contacts nothing, and --repo http://{http}/acme/deploy.git is a remote URL: use a clone (its branch as last fetched) or drop --offline"},
		{args: "--repo {samebranch} plan --env staging --offline",
			want: "lieutenant: lieutenant.yaml: history_branch main is the manifest branch being deployed: name another one (default lieutenant/runs)"},
		{args: "--repo {samebranch} validate",
			want: "lieutenant: lieutenant.yaml: history_branch main is the manifest branch being deployed: name another one (default lieutenant/runs)"},
		// A secret's value is never printed, even where the user typed it.
		{args: "--repo {repo} --rev " + secret + " validate", env: map[string]string{"LIEUTENANT_GIT_TOKEN": secret},
			want: "lieutenant: --rev REDACTED in {repo}: unknown revision: no branch, tag or commit of that name"},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			// Without the fix, watch would log the mistake at every tick
			// until this deadline, and exit 0.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var out, errOut bytes.Buffer
			code := run(ctx, append([]string{"lieutenant"}, strings.Fields(places.Replace(tc.args))...), streams{in: strings.NewReader(""), out: &out, err: &errOut})
			want := places.Replace(tc.want) + "\n"
			if code != exitInvalid || errOut.String() != want {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d, stderr:\n%s", code, errOut.String(), exitInvalid, want)
			}
			if strings.Contains(out.String()+errOut.String(), secret) {
				t.Errorf("the secret reached the terminal:\n%s%s", out.String(), errOut.String())
			}
		})
	}
}

// TestInvalidInputWithoutRepo is lieutenant run outside any repository,
// without --repo: the message says where it looked and what to pass.
func TestInvalidInputWithoutRepo(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"lieutenant", "validate"}, streams{in: strings.NewReader(""), out: &out, err: &errOut})
	want := "lieutenant: " + dir + ": not a git repository (nor is any of its parents): run lieutenant in a clone of the deploy repository, or name it with --repo PATH or URL\n"
	if code != exitInvalid || errOut.String() != want {
		t.Errorf("exit %d, stderr:\n%s\nwant exit %d, stderr:\n%s", code, errOut.String(), exitInvalid, want)
	}
}

// TestPlanOfflineFetchesNothing: plan --offline in a clone reads the
// manifest branch as last fetched and leaves the clone's refs alone, even
// when the remote moved on.
func TestPlanOfflineFetchesNothing(t *testing.T) {
	repo := exampleRepo(t, nil)
	bare := filepath.Join(t.TempDir(), "deploy.git")
	testenv.Git(t, "", "clone", "-q", "--bare", repo, bare)
	clone := filepath.Join(t.TempDir(), "clone")
	testenv.Git(t, "", "clone", "-q", bare, clone)
	fetched := testenv.Git(t, clone, "rev-parse", "origin/main")
	manifest := strings.Replace(readExample(t, "releases/staging.yaml"), "release: 2026.11.4", "release: 2099.1.1", 1)
	testenv.GitCommit(t, repo, map[string]string{"releases/staging.yaml": manifest}, "a newer release")
	testenv.Git(t, repo, "push", "-q", bare, "main")

	stdout, stderr, code := lieutenant(t, clone, "plan", "--env", "staging", "--offline")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	if now := testenv.Git(t, clone, "rev-parse", "origin/main"); now != fetched {
		t.Errorf("plan --offline fetched: origin/main moved from %s to %s", fetched, now)
	}
	if strings.Contains(stdout, "2099.1.1") || !strings.Contains(stdout, "origin/main") {
		t.Errorf("plan --offline should show origin/main as last fetched, not the remote's new release:\n%s", stdout)
	}
}

func readExample(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../../playbook/testdata/valid", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
