// compose-config loads a Compose file the way Docker Compose v2 does, through the library it is
// built on (github.com/compose-spec/compose-go/v2): the .env file and the environment are read,
// ${VAR} and ${VAR:?message} are interpolated, the result is validated against the Compose
// Specification's JSON Schema, normalized and checked for consistency (depends_on, volumes,
// networks...). It prints the resolved project as YAML, like `docker compose config`, or the
// error and exits 1. Built by scripts/setup when Go is installed; used by
// tests/contract/test_compose.py, since no Docker engine or compose plugin is installed here.
//
//	compose-config [-f docker-compose.yml] [-C project-dir]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	file := flag.String("f", "docker-compose.yml", "the Compose file")
	dir := flag.String("C", ".", "the project directory (where .env is read)")
	flag.Parse()
	options, err := cli.NewProjectOptions([]string{*file},
		cli.WithWorkingDirectory(*dir), cli.WithOsEnv, cli.WithEnvFiles(), cli.WithDotEnv,
		cli.WithConsistency(true))
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalYAML()
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
