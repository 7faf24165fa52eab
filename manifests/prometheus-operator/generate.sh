#!/bin/sh
# Writes prometheusrule.yaml from grafana/alerts.yaml, the one source of the alert rules: its
# `groups` become the PrometheusRule's `spec.groups` (indented under `spec:`). Run it after
# editing grafana/alerts.yaml; the test
# `manifests::the_prometheus_rule_has_the_alerts_of_grafana` fails until it is run.
set -eu
here=$(dirname "$0")
{
  cat <<'HEADER'
# Generated from grafana/alerts.yaml by manifests/prometheus-operator/generate.sh: edit that
# file and run this script, never this file.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: glusterfs-provisioner
  namespace: glusterfs-provisioner
spec:
HEADER
  sed 's/^/  /' "$here/../../grafana/alerts.yaml"
} >"$here/prometheusrule.yaml.tmp"
mv "$here/prometheusrule.yaml.tmp" "$here/prometheusrule.yaml"
