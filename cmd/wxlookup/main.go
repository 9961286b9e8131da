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

// exitCode is 2 for usage errors and 1 for everything else.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
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

// run dispatches a subcommand.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
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
