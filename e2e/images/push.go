package images

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Push sends the image in the docker-archive tarball at tarPath to the
// registry as ref (<registry>/<prefix>/<name>:<tag>) and returns its
// digest. Credentials come from the Docker config (~/.docker/config.json
// and its credential helpers), as `docker login` leaves them. Registries on
// localhost and private addresses are spoken to over plain HTTP.
func Push(ctx context.Context, tarPath, ref string) (string, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("push: %w", err)
	}
	img, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		return "", fmt.Errorf("push %s: read %s: %w", ref, tarPath, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return digest.String(), nil
}
