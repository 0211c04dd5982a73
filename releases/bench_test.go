package releases_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// BenchmarkPut measures one history commit (blob, three trees, commit and
// the ref compare-and-swap) on a branch that already holds a few hundred
// run records in one directory, as a busy environment's history does.
func BenchmarkPut(b *testing.B) {
	const existing = 300
	ctx := context.Background()
	dir := testenv.NewGitRepo(b, deployFiles)
	h := history(b, openRepo(b, dir))
	start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	file := []byte("outcome: success\nhosts:\n  web-1: {before: hello-web-1.0.0-1, after: hello-web-1.1.0-1}\n")
	for i := range existing {
		p, _ := record.Path("production", releases.NewRunID(start.Add(time.Duration(i)*time.Minute)))
		if _, err := h.Put(ctx, p, file, "seed"); err != nil {
			b.Fatal(err)
		}
	}
	i := existing
	for b.Loop() {
		p, _ := record.Path("production", releases.NewRunID(start.Add(time.Duration(i)*time.Minute)))
		if _, err := h.Put(ctx, p, file, fmt.Sprintf("production: run %d", i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	if got := testenv.Git(b, dir, "rev-list", "--count", "lieutenant/runs"); got != fmt.Sprint(i) {
		b.Fatalf("history has %s commits, want %d", got, i)
	}
}

// BenchmarkPushRecord measures one record write that reaches a remote: the
// commit plus a compare-and-swap push through real git-receive-pack, over
// a local path and over OpenSSH, as each run's save does when lieutenant
// works from a remote.
func BenchmarkPushRecord(b *testing.B) {
	for _, via := range []string{"file", "ssh"} {
		b.Run(via, func(b *testing.B) {
			ctx := context.Background()
			bare := testenv.NewBareGitRepo(b, deployFiles)
			url, auth := bare, releases.RemoteAuth{}
			if via == "ssh" {
				sshd := testenv.StartSSHD(b)
				conn, err := transport.NewSSH(sshd.SSHConfig())
				if err != nil {
					b.Fatal(err)
				}
				url = fmt.Sprintf("ssh://%s@%s%s", sshd.User, sshd.Addr, bare)
				auth.SSH = conn.ClientConfig
			}
			r, err := releases.InitCache(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			if err := r.UseRemote(releases.Remote{URL: url, Auth: auth}); err != nil {
				b.Fatal(err)
			}
			h := history(b, r)
			if err := h.Refresh(ctx); err != nil {
				b.Fatal(err)
			}
			file := []byte("outcome: running\n")
			i := 0
			for b.Loop() {
				i++
				if _, err := h.Put(ctx, "runs/production/r.yaml", append(file, fmt.Sprintf("saves: %d\n", i)...), "save"); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if got := testenv.Git(b, bare, "rev-list", "--count", "lieutenant/runs"); got != fmt.Sprint(i) {
				b.Fatalf("remote history has %s commits, want %d", got, i)
			}
		})
	}
}
