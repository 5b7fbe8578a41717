{{/*
The webhooks' matchConditions (CEL), as YAML lists: copies of
manifests/base/validating-webhook.yaml and manifests/base/mutating-webhook.yaml
(see the comments there for what they skip and why that is safe;
tests/match_conditions.rs proves them). tests/chart.rs renders the chart and
`kubectl kustomize manifests/` (and each overlay) and fails on any difference,
so a change there must be copied here. The ".compat" variants replace the
native list when bootonce is compat; "[]" means "the same as native"
(components/compat keeps the base's conditions). An empty list renders no
matchConditions at all.
*/}}
{{- /* "{{ end }}" without "-": the last expression keeps its final newline, as in manifests/. */}}
{{- define "kubevirt-reboot-webhook.matchConditions.validating" -}}
- name: virtualmachineinstance-uses-the-feature
  expression: |
    request.kind.kind != 'VirtualMachineInstance' ||
    [object, oldObject].exists(vmi, type(vmi) == map && (
      (has(vmi.metadata) && type(vmi.metadata) == map &&
        has(vmi.metadata.annotations) && type(vmi.metadata.annotations) == map &&
        'runstrategy.kubevirt.io' in vmi.metadata.annotations) ||
      (has(vmi.spec) && type(vmi.spec) == map &&
        has(vmi.spec.domain) && type(vmi.spec.domain) == map &&
        has(vmi.spec.domain.rebootPolicy))))
- name: virtualmachine-uses-the-feature
  expression: |
    request.kind.kind != 'VirtualMachine' ||
    [object, oldObject].exists(vm, type(vm) == map && (
      (has(vm.metadata) && type(vm.metadata) == map &&
        has(vm.metadata.annotations) && type(vm.metadata.annotations) == map &&
        'runstrategy.kubevirt.io' in vm.metadata.annotations) ||
      (has(vm.spec) && type(vm.spec) == map && (
        (has(vm.spec.runStrategy) && !(vm.spec.runStrategy in
          ['Always', 'RerunOnFailure', 'Manual', 'Halted', 'Once', 'WaitAsReceiver'])) ||
        (has(vm.spec.template) && [vm.spec.template].exists(vmi, type(vmi) == map && (
          (has(vmi.metadata) && type(vmi.metadata) == map &&
            has(vmi.metadata.annotations) && type(vmi.metadata.annotations) == map &&
            'runstrategy.kubevirt.io' in vmi.metadata.annotations) ||
          (has(vmi.spec) && type(vmi.spec) == map &&
            has(vmi.spec.domain) && type(vmi.spec.domain) == map &&
            has(vmi.spec.domain.rebootPolicy)))))))))
- name: virtualmachineinstancereplicaset-uses-the-feature
  expression: |
    request.kind.kind != 'VirtualMachineInstanceReplicaSet' ||
    [object, oldObject].exists(rs, type(rs) == map && (
      (has(rs.metadata) && type(rs.metadata) == map &&
        has(rs.metadata.annotations) && type(rs.metadata.annotations) == map &&
        'runstrategy.kubevirt.io' in rs.metadata.annotations) ||
      (has(rs.spec) && type(rs.spec) == map &&
        has(rs.spec.template) && [rs.spec.template].exists(vmi, type(vmi) == map && (
          (has(vmi.metadata) && type(vmi.metadata) == map &&
            has(vmi.metadata.annotations) && type(vmi.metadata.annotations) == map &&
            'runstrategy.kubevirt.io' in vmi.metadata.annotations) ||
          (has(vmi.spec) && type(vmi.spec) == map &&
            has(vmi.spec.domain) && type(vmi.spec.domain) == map &&
            has(vmi.spec.domain.rebootPolicy)))))))
- name: virtualmachinepool-uses-the-feature
  expression: |
    request.kind.kind != 'VirtualMachinePool' ||
    [object, oldObject].exists(pool, type(pool) == map && (
      (has(pool.metadata) && type(pool.metadata) == map &&
        has(pool.metadata.annotations) && type(pool.metadata.annotations) == map &&
        'runstrategy.kubevirt.io' in pool.metadata.annotations) ||
      (has(pool.spec) && type(pool.spec) == map &&
        has(pool.spec.virtualMachineTemplate) &&
        [pool.spec.virtualMachineTemplate].exists(vm, type(vm) == map && (
          (has(vm.metadata) && type(vm.metadata) == map &&
            has(vm.metadata.annotations) && type(vm.metadata.annotations) == map &&
            'runstrategy.kubevirt.io' in vm.metadata.annotations) ||
          (has(vm.spec) && type(vm.spec) == map && (
            (has(vm.spec.runStrategy) && !(vm.spec.runStrategy in
              ['Always', 'RerunOnFailure', 'Manual', 'Halted', 'Once', 'WaitAsReceiver'])) ||
            (has(vm.spec.template) && [vm.spec.template].exists(vmi, type(vmi) == map && (
              (has(vmi.metadata) && type(vmi.metadata) == map &&
                has(vmi.metadata.annotations) && type(vmi.metadata.annotations) == map &&
                'runstrategy.kubevirt.io' in vmi.metadata.annotations) ||
              (has(vmi.spec) && type(vmi.spec) == map &&
                has(vmi.spec.domain) && type(vmi.spec.domain) == map &&
                has(vmi.spec.domain.rebootPolicy))))))))))))
{{ end }}

{{- define "kubevirt-reboot-webhook.matchConditions.mutating" -}}
- name: virtualmachineinstance-has-a-virtualmachine-controller
  expression: |
    request.kind.kind != 'VirtualMachineInstance' ||
    (type(object) == map && has(object.metadata) && type(object.metadata) == map &&
      has(object.metadata.ownerReferences) && type(object.metadata.ownerReferences) == list &&
      object.metadata.ownerReferences.exists(ref, type(ref) == map &&
        has(ref.controller) && ref.controller == true &&
        has(ref.kind) && ref.kind == 'VirtualMachine'))
- name: virtualmachine-uses-bootonce
  expression: |
    request.kind.kind != 'VirtualMachine' ||
    [object].exists(vm, type(vm) == map && (
      (has(vm.metadata) && type(vm.metadata) == map &&
        has(vm.metadata.annotations) && type(vm.metadata.annotations) == map &&
        'runstrategy.kubevirt.io' in vm.metadata.annotations) ||
      (has(vm.spec) && type(vm.spec) == map && (
        (has(vm.spec.runStrategy) && !(vm.spec.runStrategy in
          ['Always', 'RerunOnFailure', 'Manual', 'Halted', 'Once', 'WaitAsReceiver'])) ||
        (has(vm.spec.template) && [vm.spec.template].exists(vmi, type(vmi) == map &&
          has(vmi.metadata) && type(vmi.metadata) == map &&
          has(vmi.metadata.annotations) && type(vmi.metadata.annotations) == map &&
          'runstrategy.kubevirt.io' in vmi.metadata.annotations))))))
- name: virtualmachinepool-uses-bootonce
  expression: |
    request.kind.kind != 'VirtualMachinePool' ||
    (type(object) == map && has(object.spec) && type(object.spec) == map &&
      has(object.spec.virtualMachineTemplate) &&
      [object.spec.virtualMachineTemplate].exists(vm, type(vm) == map && (
        (has(vm.metadata) && type(vm.metadata) == map &&
          has(vm.metadata.annotations) && type(vm.metadata.annotations) == map &&
          'runstrategy.kubevirt.io' in vm.metadata.annotations) ||
        (has(vm.spec) && type(vm.spec) == map && (
          (has(vm.spec.runStrategy) && !(vm.spec.runStrategy in
            ['Always', 'RerunOnFailure', 'Manual', 'Halted', 'Once', 'WaitAsReceiver'])) ||
          (has(vm.spec.template) && [vm.spec.template].exists(vmi, type(vmi) == map &&
            has(vmi.metadata) && type(vmi.metadata) == map &&
            has(vmi.metadata.annotations) && type(vmi.metadata.annotations) == map &&
            'runstrategy.kubevirt.io' in vmi.metadata.annotations)))))))
{{ end }}

{{- define "kubevirt-reboot-webhook.matchConditions.validating.compat" -}}
[]
{{- end }}

{{- define "kubevirt-reboot-webhook.matchConditions.mutating.compat" -}}
[]
{{- end }}
