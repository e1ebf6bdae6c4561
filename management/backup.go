package management

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// BackupRequest asks the running gateway for an online copy of its
// database: POST /ai-gateway/backup.
type BackupRequest struct {
	// Path of the copy on the gateway's machine: absolute, and not an
	// existing file.
	Path string `json:"path"`
}

// BackupView is the answer to a backup.
type BackupView struct {
	Path     string `json:"path"`
	Database string `json:"database"`
	Bytes    int64  `json:"bytes"`
}

// backup writes a consistent copy of the running database (every ledger
// row settled before the call included) while the gateway keeps serving.
func (h adminHandler) backup(w http.ResponseWriter, r *http.Request) error {
	var req BackupRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Path == "" || !filepath.IsAbs(req.Path) {
		return apiErr(http.StatusBadRequest, fmt.Errorf("path must be an absolute file name on the gateway's machine, got %q", req.Path))
	}
	if err := h.store.Backup(r.Context(), req.Path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return apiErr(http.StatusConflict, fmt.Errorf("%s exists; the backup never overwrites a file: %w", req.Path, err))
		}
		var pathErr *fs.PathError
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || errors.As(err, &pathErr) {
			return apiErr(http.StatusBadRequest, fmt.Errorf("cannot create %s (its directory must exist and be writable by Caddy): %w", req.Path, err))
		}
		return storeErr(fmt.Errorf("backing up to %s: %w", req.Path, err))
	}
	out := BackupView{Path: req.Path, Database: h.app.DatabasePath()}
	if fi, err := os.Stat(req.Path); err == nil {
		out.Bytes = fi.Size()
	}
	return WriteIndentedJSON(w, http.StatusOK, out)
}

// backupCommand is `caddy ai-gateway backup FILE`.
func (c *gatewayCLI) backupCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "backup FILE",
		Short: "Write an online, consistent copy of the running gateway's database",
		Long: `Writes a consistent copy of the database of the running gateway to FILE
while it keeps serving (SQLite's VACUUM INTO), every ledger row settled
before the command included. The copy is written by the Caddy process, on
its machine, with mode 0600; FILE must not exist. A relative FILE is made
absolute against the current directory first. Restore by stopping Caddy and
putting the copy in place of the database file (and removing its -wal and
-shm files).`,
		Args: namedArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := filepath.Abs(args[0])
			if err != nil {
				return fmt.Errorf("resolving %s: %w", args[0], err)
			}
			var b BackupView
			table, err := c.callInto(cmd, http.MethodPost, "/ai-gateway/backup", BackupRequest{Path: path}, &b)
			if err != nil || !table {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Backed up %s to %s (%d bytes).\n", b.Database, b.Path, b.Bytes)
			return err
		},
	}
}
