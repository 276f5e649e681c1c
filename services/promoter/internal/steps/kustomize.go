package steps

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
	"go.yaml.in/yaml/v3"
)

type imageUpdate struct {
	Image      string `json:"image"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
	UseDigest  bool   `json:"useDigest"`
	NewName    string `json:"newName"`
	FromOrigin *struct {
		Kind string `json:"kind"`
		Name string `json:"name"`
	} `json:"fromOrigin"`
}

// kustomizeSetImage sets images in a kustomization.yaml, as `kustomize edit
// set image` does. An image with neither tag nor digest takes the version
// the freight holds.
func kustomizeSetImage(_ context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path   string        `json:"path"`
		Images []imageUpdate `json:"images"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	if cfg.Path == "" {
		cfg.Path = "."
	}
	if err := sc.checkPath(cfg.Path); err != nil {
		return Result{}, err
	}
	// The file is found as it is (a link too), then read and written
	// through the work dir: a link leading out of it is an error.
	file := ""
	for _, name := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		if p := filepath.Join(cfg.Path, name); sc.Workspace.Dir.Exists(p) {
			file = p
			break
		}
	}
	if file == "" {
		return Result{}, Terminal(fmt.Errorf("no kustomization file in %s", cfg.Path))
	}
	b, err := sc.readFile(file)
	if err != nil {
		return Result{}, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return Result{}, Terminal(fmt.Errorf("parse %s: %w", file, err))
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return Result{}, Terminal(fmt.Errorf("%s is not a mapping", file))
	}
	root := doc.Content[0]
	images := mappingValue(root, "images")
	if images == nil {
		images = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "images"}, images)
	}
	var lines []string
	for i, u := range cfg.Images {
		if u.Image == "" {
			return Result{}, Terminal(fmt.Errorf("images[%d].image must not be empty", i))
		}
		if u.Tag == "" && u.Digest == "" {
			img, ok := imageFromFreight(sc.Freight, u)
			if !ok {
				return Result{}, Terminal(fmt.Errorf("images[%d]: no tag or digest given and no image %s in the freight", i, u.Image))
			}
			u.Tag = img.Tag
			if u.UseDigest {
				u.Digest = img.Digest
			}
		}
		entry := findImage(images, u.Image)
		if entry == nil {
			entry = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			setScalar(entry, "name", u.Image)
			images.Content = append(images.Content, entry)
		}
		if u.NewName != "" {
			setScalar(entry, "newName", u.NewName)
		}
		ref := u.Image
		if u.NewName != "" {
			ref = u.NewName
		}
		if u.Digest != "" {
			setScalar(entry, "digest", u.Digest)
			deleteKey(entry, "newTag")
			ref += "@" + u.Digest
		} else {
			setScalar(entry, "newTag", u.Tag)
			deleteKey(entry, "digest")
			ref += ":" + u.Tag
		}
		lines = append(lines, ref)
	}
	out, err := encodeYAML(&doc)
	if err != nil {
		return Result{}, err
	}
	if err := sc.writeFile(file, out); err != nil {
		return Result{}, err
	}
	msg := fmt.Sprintf("Updated %s to use new image", cfg.Path)
	if len(lines) > 1 {
		msg += "s"
	}
	msg += "\n\n- " + strings.Join(lines, "\n- ")
	return Result{Output: map[string]any{"commitMessage": msg}}, nil
}

func imageFromFreight(freight []model.FreightReference, u imageUpdate) (model.Image, bool) {
	for _, f := range freight {
		if u.FromOrigin != nil && (string(f.Origin.Kind) != u.FromOrigin.Kind || f.Origin.Name != u.FromOrigin.Name) {
			continue
		}
		for _, img := range f.Images {
			if img.RepoURL == u.Image {
				return img, true
			}
		}
	}
	return model.Image{}, false
}

func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func setScalar(m *yaml.Node, key, value string) {
	if v := mappingValue(m, key); v != nil {
		v.Kind, v.Tag, v.Value = yaml.ScalarNode, "!!str", value
		return
	}
	m.Content = append(m.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value})
}

func deleteKey(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func findImage(images *yaml.Node, name string) *yaml.Node {
	for _, e := range images.Content {
		if e.Kind == yaml.MappingNode {
			if v := mappingValue(e, "name"); v != nil && v.Value == name {
				return e
			}
		}
	}
	return nil
}

var errNoImages = errors.New("no images")

var _ = errNoImages
