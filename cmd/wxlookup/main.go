// Command wxlookup answers a plant's WeChat Official Account and WeCom messages with where a
// workpiece is stacked, from an in-memory cache kept in step with MySQL.
//
//	wxlookup serve [--config FILE]
//	wxlookup ask [--url URL] [--token T] [--appid A --aes-key K] [--wecom-corp C] TEXT
//	wxlookup seed --dsn DSN [--rows N]
//	wxlookup version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set by the Makefile with -ldflags.
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "wxlookup:", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitCode is 0 for a help request, 2 for usage errors and 1 for everything else.
func exitCode(err error) int {
	var u usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &u):
		return 2
	}
	return 1
}

type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

const usage = `usage:
  wxlookup serve [--config FILE]      run the responder (no settings: the embedded demo)
  wxlookup ask [flags] TEXT           send TEXT as WeChat would and print the reply
  wxlookup seed --dsn DSN [--rows N]  create the default table and fill demo rows
  wxlookup version                    print the version

Settings come from the environment (WXLOOKUP_*) and an optional YAML file; see README.md.`

// run dispatches a subcommand. A subcommand's --help prints its usage and succeeds.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	err := dispatch(ctx, args, stdout, stderr, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usageError{"no command given"}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr, getenv)
	case "ask":
		return runAsk(ctx, rest, stdout, stderr)
	case "seed":
		return runSeed(ctx, rest, stdout, stderr)
	case "version", "--version", "-v":
		fs := flag.NewFlagSet("version", flag.ContinueOnError)
		if err := parseFlags(fs, "usage: wxlookup version", rest, stdout, stderr); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wxlookup", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		fmt.Fprintln(stderr, usage)
		return usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
}

// parseFlags parses a subcommand's flags. With -h or --help it prints synopsis and the
// flags to stdout and returns flag.ErrHelp (run turns that into success); a bad flag is a
// usageError, with the synopsis and the flags on stderr.
func parseFlags(fs *flag.FlagSet, synopsis string, args []string, stdout, stderr io.Writer) error {
	fs.Usage = func() {}
	fs.SetOutput(io.Discard) // the error is returned, and main prints it once
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		printUsage(fs, synopsis, stdout)
		return flag.ErrHelp
	case err != nil:
		printUsage(fs, synopsis, stderr)
		return usageError{err.Error()}
	}
	return nil
}

func printUsage(fs *flag.FlagSet, synopsis string, w io.Writer) {
	fmt.Fprintf(w, "%s\n\nflags:\n", synopsis)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}
