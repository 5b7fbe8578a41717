package main

// The writes of cert-manager and its cainjector, for the certificate
// renewal scenarios. cert-manager's controllers are separate Go modules that
// the module proxy here does not serve, so make e2e reproduces what they
// write, from the objects the overlay and the chart create:
//
//   - an Issuer with selfSigned: {} signs a Certificate with the Certificate's
//     own key; the Secret's ca.crt is the certificate itself;
//   - an Issuer with ca: {secretName} signs with that Secret's tls.crt and
//     tls.key; the Secret's ca.crt is that CA certificate;
//   - privateKey.rotationPolicy Always (cert-manager's default since v1.18)
//     makes a new key at every issuance, Never keeps the Secret's key;
//   - the Secret (type kubernetes.io/tls: tls.crt, tls.key, ca.crt, with
//     cert-manager's annotations) is updated in place;
//   - cainjector copies ca.crt of the Secret of the Certificate named by
//     cert-manager.io/inject-ca-from into every webhook's caBundle as soon
//     as that Secret changes.
//
//	e2ehelper certmanager -kubeconfig K -n NS issue [NAME...]  # issue (or renew) these Certificates, then inject
//
// Without names: every Certificate of the namespace whose Secret is missing,
// CA certificates first.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

var (
	certificateGVR = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "certificates"}
	issuerGVR      = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "issuers"}
)

func certmanager(args []string) error {
	fs := flag.NewFlagSet("certmanager", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	ns := fs.String("n", "default", "namespace of the Certificates")
	_ = fs.Parse(args)
	if fs.NArg() < 1 || fs.Arg(0) != "issue" {
		return fmt.Errorf("usage: e2ehelper certmanager -kubeconfig K -n NS issue [CERTIFICATE...]")
	}
	ctx := context.Background()
	dyn, err := client(*kubeconfig, "", 100)
	if err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	names := fs.Args()[1:]
	if len(names) == 0 {
		list, err := dyn.Resource(certificateGVR).Namespace(*ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		// CAs first: a CA Issuer needs its Secret.
		sort.SliceStable(list.Items, func(a, b int) bool {
			isCA := func(u unstructured.Unstructured) bool {
				v, _, _ := unstructured.NestedBool(u.Object, "spec", "isCA")
				return v
			}
			return isCA(list.Items[a]) && !isCA(list.Items[b])
		})
		for _, c := range list.Items {
			secret, _, _ := unstructured.NestedString(c.Object, "spec", "secretName")
			if _, err := kube.CoreV1().Secrets(*ns).Get(ctx, secret, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				names = append(names, c.GetName())
			}
		}
	}
	issued := map[string]string{} // Certificate name -> its Secret
	for _, name := range names {
		secret, err := issue(ctx, dyn, kube, *ns, name)
		if err != nil {
			return fmt.Errorf("certificate %s/%s: %w", *ns, name, err)
		}
		issued[name] = secret
	}
	injected, err := inject(ctx, kube, *ns, issued)
	if err != nil {
		return err
	}
	return printJSON(map[string]any{"issued": names, "injected": injected})
}

// issue signs the Certificate as its Issuer would and writes its Secret.
func issue(ctx context.Context, dyn dynamic.Interface, kube kubernetes.Interface, ns, name string) (string, error) {
	c, err := dyn.Resource(certificateGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	spec := func(path ...string) string {
		v, _, _ := unstructured.NestedString(c.Object, append([]string{"spec"}, path...)...)
		return v
	}
	secretName, issuerName := spec("secretName"), spec("issuerRef", "name")
	if kind := spec("issuerRef", "kind"); kind != "" && kind != "Issuer" {
		return "", fmt.Errorf("issuerRef kind %q: only namespaced Issuers are reproduced here", kind)
	}
	isCA, _, _ := unstructured.NestedBool(c.Object, "spec", "isCA")
	dnsNames, _, _ := unstructured.NestedStringSlice(c.Object, "spec", "dnsNames")
	duration := 90 * 24 * time.Hour
	if d := spec("duration"); d != "" {
		if duration, err = time.ParseDuration(d); err != nil {
			return "", fmt.Errorf("spec.duration: %w", err)
		}
	}
	issuer, err := dyn.Resource(issuerGVR).Namespace(ns).Get(ctx, issuerName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("issuer: %w", err)
	}

	secrets := kube.CoreV1().Secrets(ns)
	old, err := secrets.Get(ctx, secretName, metav1.GetOptions{})
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return "", err
	}
	var key *ecdsa.PrivateKey
	if spec("privateKey", "rotationPolicy") == "Never" && exists && len(old.Data["tls.key"]) > 0 {
		if key, err = parseKey(old.Data["tls.key"]); err != nil {
			return "", fmt.Errorf("existing tls.key: %w", err)
		}
	} else if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return "", err
	}

	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec("commonName")},
		DNSNames:              dnsNames,
		NotBefore:             now,
		NotAfter:              now.Add(duration),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		SubjectKeyId:          keyID(&key.PublicKey),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}

	var signer *x509.Certificate
	var signerKey *ecdsa.PrivateKey
	var caPEM []byte
	switch {
	case hasField(issuer.Object, "spec", "selfSigned"):
		signer, signerKey = tmpl, key
	case hasField(issuer.Object, "spec", "ca"):
		caSecretName, _, _ := unstructured.NestedString(issuer.Object, "spec", "ca", "secretName")
		caSecret, err := secrets.Get(ctx, caSecretName, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("CA issuer's secret: %w", err)
		}
		if signer, err = parseCert(caSecret.Data["tls.crt"]); err != nil {
			return "", fmt.Errorf("CA issuer's tls.crt: %w", err)
		}
		if signerKey, err = parseKey(caSecret.Data["tls.key"]); err != nil {
			return "", fmt.Errorf("CA issuer's tls.key: %w", err)
		}
		caPEM = caSecret.Data["tls.crt"]
	default:
		return "", fmt.Errorf("issuer %s: only selfSigned and ca issuers are reproduced here", issuerName)
	}
	tmpl.AuthorityKeyId = keyID(&signerKey.PublicKey)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return "", err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if caPEM == nil {
		caPEM = certPEM // selfSigned: the certificate is its own CA
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})

	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: ns,
			Labels: map[string]string{"controller.cert-manager.io/fao": "true"},
			Annotations: map[string]string{
				"cert-manager.io/certificate-name": name, "cert-manager.io/issuer-name": issuerName,
				"cert-manager.io/issuer-kind": "Issuer", "cert-manager.io/issuer-group": "cert-manager.io",
				"cert-manager.io/common-name": spec("commonName"), "cert-manager.io/alt-names": strings.Join(dnsNames, ","),
				"cert-manager.io/ip-sans": "", "cert-manager.io/uri-sans": "",
			}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": caPEM},
	}
	if !exists {
		_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
	} else {
		old.Data = s.Data
		if old.Annotations == nil {
			old.Annotations = map[string]string{}
		}
		for k, v := range s.Annotations {
			old.Annotations[k] = v
		}
		_, err = secrets.Update(ctx, old, metav1.UpdateOptions{})
	}
	return secretName, err
}

// inject sets the caBundle of every webhook of the configurations whose
// cert-manager.io/inject-ca-from names one of the issued Certificates.
func inject(ctx context.Context, kube kubernetes.Interface, ns string, issued map[string]string) ([]string, error) {
	caOf := func(annotations map[string]string) ([]byte, error) {
		parts := strings.SplitN(annotations["cert-manager.io/inject-ca-from"], "/", 2)
		if len(parts) != 2 || parts[0] != ns || issued[parts[1]] == "" {
			return nil, nil
		}
		s, err := kube.CoreV1().Secrets(ns).Get(ctx, issued[parts[1]], metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return s.Data["ca.crt"], nil
	}
	setAll := func(ca []byte, configs ...*admissionregistrationv1.WebhookClientConfig) bool {
		changed := false
		for _, c := range configs {
			if !bytes.Equal(c.CABundle, ca) {
				c.CABundle, changed = ca, true
			}
		}
		return changed
	}
	// Both kinds of webhook configuration, each with its clientConfigs and
	// how to write it back.
	type target struct {
		name        string
		annotations map[string]string
		configs     []*admissionregistrationv1.WebhookClientConfig
		update      func() error
	}
	var targets []target
	ar := kube.AdmissionregistrationV1()
	mutating, err := ar.MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for i := range mutating.Items {
		w := &mutating.Items[i]
		t := target{name: "mutatingwebhookconfiguration/" + w.Name, annotations: w.Annotations,
			update: func() error {
				_, err := ar.MutatingWebhookConfigurations().Update(ctx, w, metav1.UpdateOptions{})
				return err
			}}
		for j := range w.Webhooks {
			t.configs = append(t.configs, &w.Webhooks[j].ClientConfig)
		}
		targets = append(targets, t)
	}
	validating, err := ar.ValidatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for i := range validating.Items {
		w := &validating.Items[i]
		t := target{name: "validatingwebhookconfiguration/" + w.Name, annotations: w.Annotations,
			update: func() error {
				_, err := ar.ValidatingWebhookConfigurations().Update(ctx, w, metav1.UpdateOptions{})
				return err
			}}
		for j := range w.Webhooks {
			t.configs = append(t.configs, &w.Webhooks[j].ClientConfig)
		}
		targets = append(targets, t)
	}
	var done []string
	for _, t := range targets {
		ca, err := caOf(t.annotations)
		if err != nil {
			return done, err
		}
		if ca == nil || !setAll(ca, t.configs...) {
			continue
		}
		if err := t.update(); err != nil {
			return done, err
		}
		done = append(done, t.name)
	}
	return done, nil
}

func hasField(obj map[string]any, path ...string) bool {
	_, found, _ := unstructured.NestedFieldNoCopy(obj, path...)
	return found
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha1.Sum(der)
	return sum[:]
}

func parseCert(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("no PEM key")
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("not an ECDSA key")
	}
	return ec, nil
}
