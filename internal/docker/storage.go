package docker

import (
	"context"
	"fmt"
	"strings"

	"github.com/docker/docker/api/types/system"
)

// storageSupport says whether the daemon's storage driver can enforce a
// per-container disk limit (StorageOpt size).
type storageSupport struct {
	Supported bool
	Reason    string // why not, for warnings and errors
}

// diskLimitSupport decides from the daemon's Info whether StorageOpt size
// works:
//   - overlay2 only over xfs mounted with pquota; Info shows the backing file
//     system but not its mount options, so xfs counts as supported and a
//     create that the daemon still refuses is handled in Create;
//   - devicemapper, btrfs, zfs and windowsfilter always;
//   - anything else (fuse-overlayfs, vfs, aufs, overlay) never.
func diskLimitSupport(info system.Info) storageSupport {
	driver := info.Driver
	switch driver {
	case "devicemapper", "btrfs", "zfs", "windowsfilter":
		return storageSupport{Supported: true}
	case "overlay2":
		backing := driverStatus(info, "Backing Filesystem")
		if backing == "xfs" {
			return storageSupport{Supported: true}
		}
		return storageSupport{Reason: fmt.Sprintf("the storage driver overlay2 enforces disk limits only on xfs with the pquota mount option; its backing file system is %s", orUnknown(backing))}
	default:
		return storageSupport{Reason: fmt.Sprintf("the storage driver %s cannot enforce per-container disk limits", orUnknown(driver))}
	}
}

func driverStatus(info system.Info, key string) string {
	for _, kv := range info.DriverStatus {
		if strings.EqualFold(kv[0], key) {
			return kv[1]
		}
	}
	return ""
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// storageSupport returns the daemon's disk limit support, asking the daemon
// once; a failed Info is not cached.
func (e *Engine) storageSupport(ctx context.Context) (storageSupport, error) {
	e.storageMu.Lock()
	defer e.storageMu.Unlock()
	if e.storage != nil {
		return *e.storage, nil
	}
	if err := e.ready(ctx, "query docker storage driver"); err != nil {
		return storageSupport{}, err
	}
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	info, err := e.cli.Info(ctx)
	if err != nil {
		return storageSupport{}, dockerError(err, "query docker storage driver")
	}
	s := diskLimitSupport(info)
	e.storage = &s
	e.log.Debug("storage driver checked", "driver", info.Driver, "diskLimits", s.Supported)
	return s, nil
}

// isStorageOptRefused reports whether a create failed because the daemon
// cannot apply StorageOpt after all (overlay2 on xfs without pquota).
func isStorageOptRefused(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "storage-opt") || strings.Contains(msg, "pquota") ||
		strings.Contains(msg, "Storage Opt") || strings.Contains(msg, "StorageOpt")
}
