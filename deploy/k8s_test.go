package deploy

import (
	"testing"
)

// k8sDir is the directory of the real manifests.
var k8sDir = path("k8s")

// loadReal loads the repository's manifests, failing the test when they do not decode.
func loadReal(t *testing.T) *manifests {
	t.Helper()
	m, err := loadManifests(k8sDir)
	if err != nil {
		t.Fatalf("k8s manifests do not decode strictly into the Kubernetes API types:%s", describe(err))
	}
	if m.container() == nil {
		t.Fatalf("deployment.yaml has no container named %q", containerName)
	}
	return m
}

// expectNone fails the test with every finding of a check.
func expectNone(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("manifests drifted from the code:%s", describe(err))
	}
}

func TestManifestsDecodeStrictlyIntoKubernetesTypes(t *testing.T) {
	loadReal(t)
}

func TestManifestsAllAgreeWithTheCode(t *testing.T) {
	// The union of the checks below, as the drift tests run it.
	expectNone(t, checkManifests(loadReal(t)))
}

func TestKustomizationAppliesEveryManifestButTheSecretExample(t *testing.T) {
	expectNone(t, checkKustomizationCoversDirectory(loadReal(t)))
}

func TestManifestContainerPortIsTheDefaultPort(t *testing.T) {
	expectNone(t, checkContainerPort(loadReal(t)))
}

func TestManifestProbePathsMatchServerRoutes(t *testing.T) {
	expectNone(t, checkProbes(loadReal(t)))
}

func TestManifestPrometheusAnnotationsPointAtMetricsRoute(t *testing.T) {
	expectNone(t, checkPrometheusAnnotations(loadReal(t)))
}

func TestManifestEnvNamesAreConfigVariables(t *testing.T) {
	expectNone(t, checkEnvNames(loadReal(t)))
}

func TestManifestConfigurationPassesServiceValidation(t *testing.T) {
	expectNone(t, checkEffectiveConfig(loadReal(t)))
}

func TestManifestJWTKeyComesFromTheDocumentedSecret(t *testing.T) {
	expectNone(t, checkSecretRefs(loadReal(t)))
}

func TestManifestGracePeriodCoversPreStopAndDrain(t *testing.T) {
	expectNone(t, checkTermination(loadReal(t)))
}

func TestManifestSecurityContextIsRestrictive(t *testing.T) {
	expectNone(t, checkSecurityContext(loadReal(t)))
}

func TestManifestResourcesAreRequestedAndMemoryLimited(t *testing.T) {
	expectNone(t, checkResources(loadReal(t)))
}

func TestManifestImageIsPinned(t *testing.T) {
	expectNone(t, checkImage(loadReal(t)))
}

func TestManifestSelectorsMatchPodLabels(t *testing.T) {
	m := loadReal(t)
	expectNone(t, checkSelectors(m))
	expectNone(t, checkService(m))
	expectNone(t, checkPDB(m))
}

func TestHPAScalesDownSlowly(t *testing.T) {
	expectNone(t, checkHPA(loadReal(t)))
}
