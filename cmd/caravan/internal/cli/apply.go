package cli

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/client"
)

// manifest is one file to send.
type manifest struct {
	name string
	body []byte
}

// readManifests reads each -f argument: "-" is stdin, a directory is
// walked recursively for .yaml, .yml and .json files (in lexical order),
// anything else is a file.
func (a *app) readManifests(paths []string) ([]manifest, error) {
	var out []manifest
	for _, p := range paths {
		if p == "-" {
			b, err := io.ReadAll(a.in)
			if err != nil {
				return nil, fmt.Errorf("read stdin: %w", err)
			}
			out = append(out, manifest{name: "<stdin>", body: b})
			continue
		}
		info, err := os.Stat(p)
		if err != nil {
			return nil, usageError{err}
		}
		if !info.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			out = append(out, manifest{name: p, body: b})
			continue
		}
		var files []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if path != p && strings.HasPrefix(d.Name(), ".") {
					return filepath.SkipDir
				}
				return nil
			}
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml", ".json":
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(files) == 0 {
			return nil, usagef("%s: no .yaml, .yml or .json files", p)
		}
		slices.Sort(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			out = append(out, manifest{name: f, body: b})
		}
	}
	return out, nil
}

func (a *app) newApply() *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update resources from Kargo manifests",
		Long: `Create or update resources from Kargo manifests: multi-document YAML or JSON,
from files, directories (recursively, in lexical order) or stdin (-f -).
Each file is sent as one request; the server validates all of a file's
documents first and writes none of them if any is invalid.`,
		Example: `  caravan apply -f examples/kustomize/
  kubectl kustomize overlays/prod | caravan apply -f -`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.sendManifests(cmd, files, false)
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file, directory or - for stdin (repeatable)")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

func (a *app) newDelete() *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "delete -f FILE|DIR|-",
		Short: "Delete the resources named in manifests",
		Long: `Delete the resources named in manifests (files, directories or stdin).
Files are sent in reverse lexical order, so that what was applied last goes
first.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.sendManifests(cmd, files, true)
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file, directory or - for stdin (repeatable)")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

func (a *app) sendManifests(cmd *cobra.Command, files []string, del bool) error {
	ms, err := a.readManifests(files)
	if err != nil {
		return err
	}
	c, _, err := a.client()
	if err != nil {
		return err
	}
	if del {
		slices.Reverse(ms)
	}
	out := cmd.OutOrStdout()
	// Every file is sent, so that one run reports every invalid file, as
	// kubectl does; the command fails at the end if any did.
	failed := 0
	for _, m := range ms {
		var o *client.Outcome
		if del {
			o, err = c.Delete(cmd.Context(), m.body)
		} else {
			o, err = c.Apply(cmd.Context(), m.body)
		}
		if err != nil {
			if len(ms) == 1 && m.name != "<stdin>" {
				return err
			}
			if cmd.Context().Err() != nil {
				return err
			}
			fmt.Fprintf(a.errOut, "Error: %s: %v\n", m.name, err)
			failed++
			continue
		}
		for _, w := range o.Warnings {
			fmt.Fprintf(a.errOut, "Warning: %s: %s\n", m.name, w)
		}
		for _, r := range o.Results {
			name := strings.ToLower(r.Kind) + "/" + r.Name
			if r.Project != "" && r.Kind != "Project" {
				fmt.Fprintf(out, "%s %s (project %s)\n", name, r.Action, r.Project)
			} else {
				fmt.Fprintf(out, "%s %s\n", name, r.Action)
			}
		}
	}
	switch {
	case failed == 0:
		return nil
	case len(ms) == 1:
		return exitError{code: 1}
	}
	return fmt.Errorf("%d of %d files failed (each error is above)", failed, len(ms))
}
