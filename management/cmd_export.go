package management

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// exportFlags are the flags of `caddy ai-gateway usage export`.
type exportFlags struct {
	format, account, key, model, since, until, output string
	force                                             bool
}

func (c *gatewayCLI) usageExport() *cobra.Command {
	var f exportFlags
	cmd := &cobra.Command{
		Use:   "export [--format csv|jsonl] [--account ID] [--key KEY_ID] [--model M] [--since T] [--until T] [--output FILE [--force]]",
		Short: "Write raw ledger rows as CSV or JSON Lines, e.g. to archive them",
		Long: `Writes the ledger rows (requests and balance adjustments) that match the
filters, oldest first, as CSV (the default) or JSON Lines, streamed: an
export of any size takes constant memory in the gateway and here.

The fields are those of the rows of GET /ai-gateway/usage (id, created_at,
account_id, ..., amount, balance_after, cost); amounts come both in
nano-units and as the same decimal strings. In CSV the first record names
the fields and a cell is empty where the JSON leaves the field out.

--since and --until take what 'usage' takes. The export covers the rows
committed when it starts.

The gateway ends a complete export with the number of rows and a SHA-256
of what it sent; this command checks them and fails (exit status 1) if
the stream was cut or the gateway reported an error. With --output the
rows go to a temporary file beside FILE that is renamed to FILE only once
the export is complete, so FILE is never a partial export. An existing
FILE is not overwritten unless --force is given.`,
		Example: `  $ caddy ai-gateway usage export --output ledger-2026-11.csv --since 2026-11-01 --until 2026-12-01
  $ caddy ai-gateway usage export --format jsonl --account acme > acme.jsonl`,
		Args: namedArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := keyWhereKeyIDBelongs("--key", f.key); err != nil {
				return fmt.Errorf("refused, nothing was sent: %w", err)
			}
			if c.json {
				return usageError(cmd, errors.New("--json does not apply to an export; use --format jsonl"))
			}
			if f.format != ExportCSV && f.format != ExportJSONL {
				return usageError(cmd, fmt.Errorf("--format must be %s or %s, got %q", ExportCSV, ExportJSONL, f.format))
			}
			if f.force && f.output == "" {
				return usageError(cmd, errors.New("--force goes with --output"))
			}
			if f.output != "" && !f.force {
				if _, err := os.Lstat(f.output); err == nil {
					return fmt.Errorf("refused, nothing was sent: %s exists; give --force to overwrite it", f.output)
				}
			}
			q := url.Values{"format": {f.format}}
			for name, v := range map[string]string{
				"account": f.account, "key": f.key, "model": f.model, "since": f.since, "until": f.until,
			} {
				if v != "" {
					q.Set(name, v)
				}
			}
			uri := "/ai-gateway/usage/export?" + q.Encode()
			if f.output == "" {
				rows, err := c.export(cmd, uri, cmd.OutOrStdout())
				if errors.Is(err, errExportIncomplete) {
					return fmt.Errorf("%w; what was printed is incomplete", err)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "Exported %d %s.\n", rows, plural(rows, "row", "rows"))
				return nil
			}
			return c.exportToFile(cmd, uri, f.output, f.force)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.format, "format", ExportCSV, "Output format: csv or jsonl (JSON Lines)")
	fl.StringVar(&f.account, "account", "", "Only this account")
	fl.StringVar(&f.key, "key", "", "Only this key id")
	fl.StringVar(&f.model, "model", "", "Only this model (exact name)")
	fl.StringVar(&f.since, "since", "", "From this time, date or duration ago (inclusive)")
	fl.StringVar(&f.until, "until", "", "Up to this time, date or duration ago (exclusive)")
	fl.StringVarP(&f.output, "output", "o", "", "Write to FILE instead of standard output")
	fl.BoolVar(&f.force, "force", false, "Overwrite --output FILE if it exists")
	return cmd
}

// exportToFile writes the export of uri to a temporary file beside path
// and, once it is complete and synced, renames it to path.
func (c *gatewayCLI) exportToFile(cmd *cobra.Command, uri, path string, force bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".partial-*")
	if err != nil {
		return fmt.Errorf("creating the output file: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	rows, err := c.export(cmd, uri, tmp)
	if err != nil {
		return fmt.Errorf("%w; %s was not written", err, path)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if !force {
		// checked before sending too; this narrows the window to nothing
		// a person would hit
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s appeared during the export; give --force to overwrite it (the export is not kept)", path)
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("moving the export into place: %w", err)
	}
	done = true
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "Exported %d %s to %s.\n", rows, plural(rows, "row", "rows"), path)
	return err
}

// errExportIncomplete is an export whose stream began but did not end
// complete.
var errExportIncomplete = errors.New("export incomplete")

// readTracker remembers the error of the reader it wraps, to tell a cut
// stream from a failing output.
type readTracker struct {
	r   io.Reader
	err error
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// export streams the export of uri to w and checks its trailers: it
// returns the number of rows, or an error if the gateway refused, reported
// a failure, or the stream was cut.
func (c *gatewayCLI) export(cmd *cobra.Command, uri string, w io.Writer) (int64, error) {
	resp, addr, err := c.request(cmd, http.MethodGet, uri, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return 0, &adminAPIError{Status: resp.StatusCode, Message: adminErrorMessage(resp.StatusCode, b)}
	}
	sum := sha256.New()
	body := &readTracker{r: resp.Body}
	n, err := io.Copy(io.MultiWriter(w, sum), body)
	switch {
	case body.err != nil:
		return 0, fmt.Errorf("%w: the stream was cut after %d bytes: %v", errExportIncomplete, n, body.err)
	case err != nil:
		return 0, fmt.Errorf("writing the export: %w", err)
	}
	if msg := resp.Trailer.Get(TrailerExportError); msg != "" {
		return 0, fmt.Errorf("%w: the gateway at %s reported: %s", errExportIncomplete, addr, msg)
	}
	rows, wantSum := resp.Trailer.Get(TrailerExportRows), resp.Trailer.Get(TrailerExportSHA256)
	if rows == "" || wantSum == "" {
		return 0, fmt.Errorf("%w: the stream ended after %d bytes without the gateway's end-of-export trailers", errExportIncomplete, n)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != wantSum {
		return 0, fmt.Errorf("%w: the %d bytes received do not have the SHA-256 the gateway sent", errExportIncomplete, n)
	}
	var count int64
	if _, err := fmt.Sscan(rows, &count); err != nil {
		return 0, fmt.Errorf("%w: bad %s trailer %q", errExportIncomplete, TrailerExportRows, rows)
	}
	return count, nil
}
