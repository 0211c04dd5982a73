package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

type streams struct {
	in       io.Reader
	out, err io.Writer
}

func newApp(s streams) *cli.App {
	return &cli.App{
		Name:  "lieutenant",
		Usage: "roll a Git-committed RPM manifest out to a fleet, batch by batch, behind a load balancer",
		Description: `lieutenant reads its configuration from a Git repository at one revision (never the
work tree): lieutenant.yaml names the environments, each with a release manifest (exact
RPMs), an inventory of hosts and a playbook (batches, per-host steps, the gate between
batches). Every run is recorded in files on the history branch (lieutenant/runs).

   lieutenant validate                    check every file, report every problem
   lieutenant plan --env production       what would change, host by host
   lieutenant run --env production        do it
   lieutenant sync --env production       do it if the manifest changed since the last success (CI)
   lieutenant history --env production    what happened
   lieutenant rollback --env production   put the previous release back, as a commit

` + exitCodesHelp,
		Writer:          s.out,
		ErrWriter:       s.err,
		Reader:          s.in,
		HideHelpCommand: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "repo", Value: ".", EnvVars: []string{"LIEUTENANT_REPO"},
				Usage: "deploy repository: a clone or bare repository here, or a remote URL (ssh://, user@host:path, https://, file://)"},
			&cli.StringFlag{Name: "remote", Value: "origin", EnvVars: []string{"LIEUTENANT_REMOTE"},
				Usage: "remote of a local --repo to fetch from and push the history to, when it has one; none: work locally"},
			&cli.StringFlag{Name: "branch", EnvVars: []string{"LIEUTENANT_BRANCH"},
				Usage: "manifest branch of the remote (default: the remote's HEAD)"},
			&cli.StringFlag{Name: "rev", EnvVars: []string{"LIEUTENANT_REV"},
				Usage: "revision to read the configuration from (default: the fetched manifest branch, or HEAD without a remote)"},
			&cli.StringSliceFlag{Name: "git-known-hosts", EnvVars: []string{"LIEUTENANT_GIT_KNOWN_HOSTS"},
				Usage: "known_hosts file for an SSH remote (default ~/.ssh/known_hosts)"},
			&cli.StringSliceFlag{Name: "git-identity", EnvVars: []string{"LIEUTENANT_GIT_IDENTITY"},
				Usage: "private key for an SSH remote (default: ~/.ssh/id_* and ssh-agent); an HTTPS remote takes LIEUTENANT_GIT_TOKEN"},
		},
		Commands: withUsageErrors("", validateCommand(s), planCommand(s), runCommand(s), syncCommand(s), resumeCommand(s),
			rollbackCommand(s), historyCommand(s), showCommand(s), approveCommand(s, true), approveCommand(s, false),
			lockCommand(s), watchCommand(s)),
		// Reached only when the first argument is not a command.
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				var names []string
				for _, cmd := range c.App.VisibleCommands() {
					names = append(names, cmd.Name)
				}
				return usagef("unknown command %q (commands: %s; see lieutenant --help)", c.Args().First(), strings.Join(names, ", "))
			}
			return cli.ShowAppHelp(c)
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usagef("%v (see lieutenant --help)", err) },
		// Errors are printed and mapped to exit codes by run, in one place.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}

func envFlag() cli.Flag {
	return &cli.GenericFlag{Name: "env", Aliases: []string{"e"}, Value: &onceValue{what: "environment"}, Usage: "environment from lieutenant.yaml (required)"}
}

// onceValue is a flag value given at most once: a StringFlag keeps the
// last of --env staging --env production, and the command would act on an
// environment the user may not have meant.
type onceValue struct {
	what  string
	value string
	set   bool
}

func (o *onceValue) Set(s string) error {
	if o.set {
		return fmt.Errorf("given twice (%s and %s): name one %s", o.value, s, o.what)
	}
	o.value, o.set = s, true
	return nil
}

func (o *onceValue) String() string { return o.value }

func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "table or json"}
}

func sshFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "known-hosts", Usage: "known_hosts file (repeatable); overrides ssh.known_hosts"},
		&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "private key file (repeatable); overrides ssh.identity_files"},
		&cli.StringFlag{Name: "ssh-user", Usage: "login user for hosts without one; overrides ssh.user"},
	}
}

// checkUsage catches what urfave/cli does not: stray arguments, a missing
// --env, an unknown --output.
func checkUsage(c *cli.Context) error {
	name := c.Command.FullName()
	if c.Args().Present() {
		return usagef("%s takes no arguments, got %q (see lieutenant %s --help)", name, c.Args().First(), name)
	}
	return checkFlags(c)
}

// runArg is checkUsage for commands that take one run ID.
func runArg(c *cli.Context) (string, error) {
	name := c.Command.FullName()
	for _, a := range c.Args().Tail() {
		if strings.HasPrefix(a, "-") {
			return "", usagef("%s: flags go before the RUN id: lieutenant %s %s %s", name, name, strings.Join(c.Args().Tail(), " "), c.Args().First())
		}
	}
	if c.NArg() != 1 {
		return "", usagef("%s needs exactly one RUN id, got %d arguments (run ids are in lieutenant history --env ENV)", name, c.NArg())
	}
	return c.Args().First(), checkFlags(c)
}

func checkFlags(c *cli.Context) error {
	name := c.Command.FullName()
	for _, f := range c.Command.Flags {
		switch f.Names()[0] {
		case "env":
			if c.String("env") == "" {
				return usagef("%s needs --env ENVIRONMENT, one of those in lieutenant.yaml (see lieutenant %s --help)", name, name)
			}
		case "output":
			if o := c.String("output"); o != "table" && o != "json" {
				return usagef("--output %q: use table or json", o)
			}
		}
	}
	return nil
}

// withUsageErrors makes a bad flag a one-line usage error (exit 2) instead
// of urfave/cli's page of help.
func withUsageErrors(parent string, cmds ...*cli.Command) []*cli.Command {
	for _, c := range cmds {
		name := parent + c.Name
		c.OnUsageError = func(_ *cli.Context, err error, _ bool) error {
			return usagef("%s: %v (see lieutenant %s --help)", name, err, name)
		}
	}
	return cmds
}
