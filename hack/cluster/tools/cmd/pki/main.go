// Command pki writes the certificates, keys and kubeconfigs of the local
// cluster (`make cluster`) into one directory: a CA, the API server's serving
// certificate, a client certificate per component, the kubelet's serving
// certificate and the service-account signing key pair. Files that exist are
// kept, so a second run changes nothing.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	dir := flag.String("dir", "", "output directory")
	nodeName := flag.String("node-name", "meterr-node", "the node's name")
	nodeIP := flag.String("node-ip", "", "the node's IP (API server and kubelet)")
	serviceIP := flag.String("service-ip", "", "the kubernetes Service's ClusterIP")
	inner := flag.String("server", "", "API server URL for the node's components")
	outer := flag.String("host-server", "", "API server URL for the admin kubeconfig on the host")
	flag.Parse()
	if *dir == "" || *nodeIP == "" || *serviceIP == "" || *inner == "" || *outer == "" {
		fmt.Fprintln(os.Stderr, "pki: --dir, --node-ip, --service-ip, --server and --host-server are required")
		os.Exit(2)
	}
	if err := run(*dir, *nodeName, net.ParseIP(*nodeIP), net.ParseIP(*serviceIP), *inner, *outer); err != nil {
		fmt.Fprintln(os.Stderr, "pki:", err)
		os.Exit(1)
	}
}

type pair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func run(dir, nodeName string, nodeIP, serviceIP net.IP, inner, outer string) error {
	if nodeIP == nil || serviceIP == nil {
		return errors.New("invalid --node-ip or --service-ip")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := loadOrCreate(dir, "ca", func(key crypto.Signer) (*x509.Certificate, error) {
		tmpl := template("meterr-cluster-ca", nil)
		tmpl.IsCA = true
		tmpl.BasicConstraintsValid = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
		return sign(tmpl, tmpl, key.Public(), key)
	})
	if err != nil {
		return err
	}
	loopback := net.ParseIP("127.0.0.1")
	servers := []struct {
		name, cn string
		dns      []string
		ips      []net.IP
	}{
		{"apiserver", "kube-apiserver", []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}, []net.IP{loopback, nodeIP, serviceIP}},
		{"kubelet-serving", "system:node:" + nodeName, []string{nodeName, "localhost"}, []net.IP{loopback, nodeIP}},
	}
	for _, s := range servers {
		if _, err := leaf(dir, s.name, ca, pkix.Name{CommonName: s.cn}, x509.ExtKeyUsageServerAuth, s.dns, s.ips); err != nil {
			return err
		}
	}
	clients := []struct {
		name, cn, org, server string
	}{
		{"admin", "meterr-admin", "system:masters", outer},
		{"admin-node", "meterr-admin", "system:masters", inner},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters", ""},
		{"controller-manager", "system:kube-controller-manager", "", inner},
		{"scheduler", "system:kube-scheduler", "", inner},
		{"kubelet", "system:node:" + nodeName, "system:nodes", inner},
		{"kube-proxy", "system:kube-proxy", "", inner},
	}
	for _, c := range clients {
		name := pkix.Name{CommonName: c.cn}
		if c.org != "" {
			name.Organization = []string{c.org}
		}
		p, err := leaf(dir, c.name, ca, name, x509.ExtKeyUsageClientAuth, nil, nil)
		if err != nil {
			return err
		}
		if c.server != "" {
			if err := kubeconfig(filepath.Join(dir, c.name+".kubeconfig"), c.server, c.cn, ca, p); err != nil {
				return err
			}
		}
	}
	return serviceAccountKeys(dir)
}

func template(cn string, org []string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: org},
		NotBefore:    now.Add(-time.Hour),
		// A throwaway cluster: a year is far longer than it lives.
		NotAfter: now.Add(365 * 24 * time.Hour),
	}
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func leaf(dir, name string, ca *pair, subject pkix.Name, usage x509.ExtKeyUsage, dns []string, ips []net.IP) (*pair, error) {
	return loadOrCreate(dir, name, func(key crypto.Signer) (*x509.Certificate, error) {
		tmpl := template(subject.CommonName, subject.Organization)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
		tmpl.DNSNames = dns
		tmpl.IPAddresses = ips
		return sign(tmpl, ca.cert, key.Public(), ca.key)
	})
}

// loadOrCreate reads name.crt and name.key from dir, or makes and writes them.
func loadOrCreate(dir, name string, mk func(crypto.Signer) (*x509.Certificate, error)) (*pair, error) {
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if c, err := os.ReadFile(certPath); err == nil {
		k, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, err
		}
		return parsePair(c, k)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := mk(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		return nil, err
	}
	return &pair{cert, key}, nil
}

func parsePair(certPEM, keyPEM []byte) (*pair, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("bad PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	return &pair{cert, key}, nil
}

// serviceAccountKeys writes sa.key and sa.pub, the key pair that signs and
// verifies service-account tokens.
func serviceAccountKeys(dir string) error {
	keyPath, pubPath := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if _, err := os.Stat(keyPath); err == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func kubeconfig(path, server, user string, ca, client *pair) error {
	keyDER, err := x509.MarshalECPrivateKey(client.key.(*ecdsa.PrivateKey))
	if err != nil {
		return err
	}
	b64 := func(typ string, der []byte) string {
		return base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `apiVersion: v1
kind: Config
clusters:
- name: meterr-cluster
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: meterr-cluster
  context:
    cluster: meterr-cluster
    user: %s
current-context: meterr-cluster
`, server, b64("CERTIFICATE", ca.cert.Raw), user, b64("CERTIFICATE", client.cert.Raw), b64("EC PRIVATE KEY", keyDER), user)
	return os.WriteFile(path, []byte(sb.String()), 0o600)
}
