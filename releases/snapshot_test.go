package releases_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

func TestSnapshotReadsCommitsNotTheWorkTree(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	first := testenv.Git(t, dir, "rev-parse", "HEAD")
	testenv.Git(t, dir, "tag", "v1")
	testenv.Git(t, dir, "tag", "-a", "-m", "release one", "release-1")
	second := testenv.GitCommit(t, dir, map[string]string{
		"releases/production.yaml": "release: 2026.11.4\n",
	}, "Release 2026.11.4\n\nBody that is not the subject.")

	// Uncommitted edits, a staged file and an untracked file: none of
	// them may leak into a snapshot.
	testenv.WriteFiles(t, dir, map[string]string{
		"releases/production.yaml": "release: EDITED\n",
		"releases/staged.yaml":     "staged: true\n",
		"untracked.yaml":           "untracked: true\n",
	})
	testenv.Git(t, dir, "add", "releases/staged.yaml")
	if err := os.Remove(filepath.Join(dir, "playbooks", "web.yaml")); err != nil {
		t.Fatal(err)
	}

	r := openRepo(t, dir)
	for _, tc := range []struct {
		rev, want, hash string
	}{
		{"main", "release: 2026.11.4\n", second},
		{"HEAD", "release: 2026.11.4\n", second},
		{"", "release: 2026.11.4\n", second},
		{"refs/heads/main", "release: 2026.11.4\n", second},
		{"HEAD~1", deployFiles["releases/production.yaml"], first},
		{"main^", deployFiles["releases/production.yaml"], first},
		{"v1", deployFiles["releases/production.yaml"], first},
		{"release-1", deployFiles["releases/production.yaml"], first},
		{first, deployFiles["releases/production.yaml"], first},
		{first[:7], deployFiles["releases/production.yaml"], first},
		{first[:12], deployFiles["releases/production.yaml"], first},
	} {
		snap, err := r.Snapshot(ctx, tc.rev)
		if err != nil {
			t.Fatalf("Snapshot(%q): %v", tc.rev, err)
		}
		if snap.Hash != tc.hash {
			t.Errorf("Snapshot(%q).Hash = %s, want %s", tc.rev, snap.Hash, tc.hash)
		}
		got, err := fs.ReadFile(snap, "releases/production.yaml")
		if err != nil {
			t.Fatalf("Snapshot(%q): %v", tc.rev, err)
		}
		if string(got) != tc.want {
			t.Errorf("Snapshot(%q): releases/production.yaml = %q, want %q", tc.rev, got, tc.want)
		}
		// Deleted from the work tree, still in every commit.
		if _, err := fs.ReadFile(snap, "playbooks/web.yaml"); err != nil {
			t.Errorf("Snapshot(%q): %v", tc.rev, err)
		}
		for _, name := range []string{"untracked.yaml", "releases/staged.yaml"} {
			if _, err := fs.Stat(snap, name); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Snapshot(%q): Stat(%s) = %v, want not found", tc.rev, name, err)
			}
		}
	}

	snap, err := r.Snapshot(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	if want := testenv.Git(t, dir, "rev-parse", "--short=7", second); snap.ShortHash != want {
		t.Errorf("ShortHash = %s, want %s", snap.ShortHash, want)
	}
	if snap.Subject != "Release 2026.11.4" {
		t.Errorf("Subject = %q", snap.Subject)
	}
	if want := (releases.Signature{Name: testenv.GitUserName, Email: testenv.GitUserEmail}); snap.Author != want {
		t.Errorf("Author = %v, want %v", snap.Author, want)
	}
	ct, _ := strconv.ParseInt(testenv.Git(t, dir, "log", "-1", "--format=%ct", second), 10, 64)
	if !snap.Time.Equal(time.Unix(ct, 0)) {
		t.Errorf("Time = %v, want %v", snap.Time, time.Unix(ct, 0))
	}
	if want := "main (" + snap.ShortHash + ")"; snap.String() != want {
		t.Errorf("String() = %q, want %q", snap.String(), want)
	}
}

func TestSnapshotIsAnFS(t *testing.T) {
	dir := testenv.NewGitRepo(t, deployFiles)
	testenv.WriteFiles(t, dir, map[string]string{"bin/check.sh": "#!/bin/sh\nexit 0\n"})
	if err := os.Chmod(filepath.Join(dir, "bin", "check.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("production.yaml", filepath.Join(dir, "releases", "current.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../releases", filepath.Join(dir, "bin", "releases")); err != nil {
		t.Fatal(err)
	}
	testenv.Git(t, dir, "add", "-A")
	testenv.Git(t, dir, "commit", "-q", "-m", "add script and links")

	snap, err := openRepo(t, dir).Snapshot(context.Background(), "main")
	if err != nil {
		t.Fatal(err)
	}
	if err := fstest.TestFS(snap, "lieutenant.yaml", "releases/production.yaml", "inventory/production.yaml",
		"playbooks/web.yaml", "bin/check.sh", "releases/current.yaml"); err != nil {
		t.Fatal(err)
	}

	entries, err := fs.ReadDir(snap, "releases")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got, want := names, []string{"current.yaml", "production.yaml"}; !slices.Equal(got, want) {
		t.Errorf("ReadDir(releases) = %v, want %v", got, want)
	}
	if entries[0].Type() != fs.ModeSymlink {
		t.Errorf("releases/current.yaml type = %v, want symlink", entries[0].Type())
	}

	info, err := fs.Stat(snap, "bin/check.sh")
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode() != 0o755 || info.Size() != int64(len("#!/bin/sh\nexit 0\n")) {
		t.Errorf("bin/check.sh: mode %v size %d", info.Mode(), info.Size())
	}
	if !info.ModTime().Equal(snap.Time) {
		t.Errorf("ModTime = %v, want the commit time %v", info.ModTime(), snap.Time)
	}

	// Links are followed inside the tree, in files and in directories.
	for _, name := range []string{"releases/current.yaml", "bin/releases/production.yaml", "bin/releases/current.yaml"} {
		got, err := fs.ReadFile(snap, name)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != deployFiles["releases/production.yaml"] {
			t.Errorf("%s = %q", name, got)
		}
	}
	if target, err := fs.ReadLink(snap, "releases/current.yaml"); err != nil || target != "production.yaml" {
		t.Errorf("ReadLink = %q, %v", target, err)
	}

	sub, err := fs.Sub(snap, "releases")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.ReadFile(sub, "production.yaml"); err != nil {
		t.Error(err)
	}
}

func TestSnapshotSymlinkOutsideTheTree(t *testing.T) {
	dir := testenv.NewGitRepo(t, deployFiles)
	if err := os.Symlink("../../etc/passwd", filepath.Join(dir, "releases", "escape.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("loop.yaml", filepath.Join(dir, "releases", "loop.yaml")); err != nil {
		t.Fatal(err)
	}
	testenv.Git(t, dir, "add", "-A")
	testenv.Git(t, dir, "commit", "-q", "-m", "bad links")
	snap, err := openRepo(t, dir).Snapshot(context.Background(), "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.ReadFile(snap, "releases/escape.yaml"); err == nil {
		t.Error("reading a link out of the repository succeeded")
	} else {
		t.Log(err)
	}
	if _, err := fs.ReadFile(snap, "releases/loop.yaml"); err == nil {
		t.Error("reading a link loop succeeded")
	} else {
		t.Log(err)
	}
}

func TestSnapshotErrors(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	r := openRepo(t, dir)
	snap, err := r.Snapshot(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := fs.ReadFile(snap, "releases/staging.yaml")
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want fs.ErrNotExist", err)
		}
		if want := "releases/staging.yaml: not found at main (" + snap.ShortHash + ")"; err.Error() != want {
			t.Errorf("err = %q, want %q", err, want)
		}
		var nf *releases.NotFoundError
		if !errors.As(err, &nf) || nf.Path != "releases/staging.yaml" {
			t.Errorf("err = %#v, want a *NotFoundError for the path", err)
		}
		for _, open := range []func() error{
			func() error { _, err := snap.Open("nope/x.yaml"); return err },
			func() error { _, err := fs.Stat(snap, "releases/production.yaml/x"); return err },
			func() error { _, err := fs.ReadDir(snap, "nope"); return err },
		} {
			if err := open(); err == nil {
				t.Error("no error for a missing path")
			}
		}
	})

	t.Run("directory and invalid paths", func(t *testing.T) {
		if _, err := fs.ReadFile(snap, "releases"); err == nil {
			t.Error("ReadFile of a directory succeeded")
		}
		for _, name := range []string{"/releases/production.yaml", "../x", "releases/", ""} {
			if _, err := snap.Open(name); !errors.Is(err, fs.ErrInvalid) {
				t.Errorf("Open(%q) = %v, want fs.ErrInvalid", name, err)
			}
		}
	})

	t.Run("unknown revision", func(t *testing.T) {
		for _, rev := range []string{"nope", "HEAD~5", "deadbeef", "main^2", "v9.9.9"} {
			_, err := r.Snapshot(ctx, rev)
			if !errors.Is(err, releases.ErrUnknownRevision) {
				t.Errorf("Snapshot(%q) = %v, want ErrUnknownRevision", rev, err)
				continue
			}
			if want := `resolve revision "` + rev + `" in ` + r.Path(); !strings.Contains(err.Error(), want) {
				t.Errorf("Snapshot(%q) = %q, want it to say %q", rev, err, want)
			}
		}
	})

	t.Run("not a repository", func(t *testing.T) {
		plain := t.TempDir()
		_, err := releases.Open(plain)
		if !errors.Is(err, releases.ErrNotRepository) {
			t.Fatalf("err = %v, want ErrNotRepository", err)
		}
		if want := "open deploy repository " + plain + ": not a git repository (run `git init` or pass --repo)"; err.Error() != want {
			t.Errorf("err = %q, want %q", err, want)
		}
		if _, err := releases.Open(filepath.Join(plain, "missing")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(missing dir) = %v, want fs.ErrNotExist", err)
		}
	})

	t.Run("empty repository", func(t *testing.T) {
		empty := openRepo(t, testenv.NewGitRepo(t, nil))
		for _, rev := range []string{"", "main", "HEAD"} {
			_, err := empty.Snapshot(ctx, rev)
			if !errors.Is(err, releases.ErrNoCommits) {
				t.Errorf("Snapshot(%q) = %v, want ErrNoCommits", rev, err)
			}
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := r.Snapshot(cctx, "main"); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
}

func TestOpenFindsTheRepository(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	for _, p := range []string{dir, filepath.Join(dir, "releases"), filepath.Join(dir, "releases", "production.yaml"), filepath.Join(dir, ".git")} {
		r, err := releases.Open(p)
		if err != nil {
			t.Fatalf("Open(%s): %v", p, err)
		}
		if _, err := r.Snapshot(ctx, "main"); err != nil {
			t.Errorf("Open(%s): %v", p, err)
		}
		r.Close()
	}

	bare := testenv.NewBareGitRepo(t, deployFiles)
	r := openRepo(t, bare)
	if !r.Bare() || r.Path() != bare {
		t.Errorf("bare repository: Bare() = %v, Path() = %s", r.Bare(), r.Path())
	}
	snap, err := r.Snapshot(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.ReadFile(snap, "releases/production.yaml"); err != nil {
		t.Error(err)
	}

	// A bare repository inside a work tree is itself, not the work tree.
	nested := filepath.Join(dir, "nested.git")
	testenv.Git(t, dir, "init", "-q", "--bare", nested)
	if r, err := releases.Open(nested); err != nil || r.Path() != nested {
		t.Errorf("Open(nested bare) = %v, %v", r, err)
	}
}

// TestSnapshotResolvesLikeGit compares revision lookups with git rev-parse,
// including the cases where go-git's own ResolveRevision disagrees.
func TestSnapshotResolvesLikeGit(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	first := testenv.Git(t, dir, "rev-parse", "HEAD")
	testenv.GitCommit(t, dir, map[string]string{"releases/production.yaml": "release: 2\n"}, "second")
	testenv.GitCommit(t, dir, map[string]string{"releases/production.yaml": "release: 3\n"}, "third")
	// A branch whose name is also an abbreviation of another commit: git
	// takes the branch (and warns).
	testenv.Git(t, dir, "branch", first[:7], "HEAD~1")
	testenv.Git(t, dir, "tag", "-a", "-m", "tagged", "2026.11.3", "HEAD~1")
	long := "release/a-branch-name-longer-than-forty-characters"
	testenv.Git(t, dir, "branch", long, "HEAD~2")

	r := openRepo(t, dir)
	revs := []string{"HEAD", "main", "main~2", "HEAD^^", "HEAD~1^", first[:7], first[:4], first, "2026.11.3", "2026.11.3~1", "tags/2026.11.3", "heads/main", long, long + "~0"}
	for _, rev := range revs {
		want := testenv.Git(t, dir, "rev-parse", "--verify", "--quiet", rev+"^{commit}")
		snap, err := r.Snapshot(ctx, rev)
		if err != nil {
			t.Errorf("Snapshot(%q): %v (git: %s)", rev, err, want)
			continue
		}
		if snap.Hash != want {
			t.Errorf("Snapshot(%q) = %s, git rev-parse says %s", rev, snap.Hash, want)
		}
	}
	// Too short to be an abbreviation, for git too.
	for _, rev := range []string{first[:1], first[:3]} {
		if _, err := r.Snapshot(ctx, rev); !errors.Is(err, releases.ErrUnknownRevision) {
			t.Errorf("Snapshot(%q) = %v, want ErrUnknownRevision", rev, err)
		}
	}
	// Syntax go-git would parse and then ignore.
	for _, rev := range []string{"main@{1}", "main@{yesterday}", "main:lieutenant.yaml", "HEAD^{tree}", "main..HEAD"} {
		if _, err := r.Snapshot(ctx, rev); err == nil {
			t.Errorf("Snapshot(%q) succeeded, want an error", rev)
		}
	}
}

// A file over the size lieutenant reads from Git is refused with its name,
// not read into memory.
func TestSnapshotRefusesAHugeFile(t *testing.T) {
	testenv.RequireBinaries(t, "git")
	dir := testenv.NewGitRepo(t, map[string]string{
		"lieutenant.yaml": "environments: {}\n",
		"huge.yaml":       strings.Repeat("# padding\n", 17<<20/10),
	})
	snap, err := openRepo(t, dir).Snapshot(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = snap.ReadFile("huge.yaml")
	if err == nil || !strings.Contains(err.Error(), "huge.yaml") || !strings.Contains(err.Error(), "over the 16 MiB") {
		t.Fatalf("ReadFile(huge.yaml) = %v, want an error naming the file and the 16 MiB limit", err)
	}
	if _, err := snap.ReadFile("lieutenant.yaml"); err != nil {
		t.Errorf("ReadFile(lieutenant.yaml): %v", err)
	}
}
