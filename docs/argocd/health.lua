-- Argo CD health check for MeterrAPIKey (auth.meterr.ai).
-- Install under resource.customizations.health.auth.meterr.ai_MeterrAPIKey
-- in the argocd-cm ConfigMap (see docs/argocd.md).
local hs = { status = "Progressing", message = "Waiting for the operator to issue the key" }
if obj.status == nil then
  return hs
end
if obj.status.observedGeneration == nil or obj.metadata.generation == nil or
    obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local conditions = obj.status.conditions or {}
for _, c in ipairs(conditions) do
  if c.type == "Stalled" and c.status == "True" then
    hs.status = "Degraded"
    hs.message = (c.reason or "") .. ": " .. (c.message or "")
    return hs
  end
end
for _, c in ipairs(conditions) do
  if c.type == "Ready" then
    hs.message = (c.reason or "") .. ": " .. (c.message or "")
    if c.status == "True" then
      hs.status = "Healthy"
    elseif c.reason == "Disabled" then
      hs.status = "Suspended"
    elseif c.reason == "Expired" or c.reason == "SecretConflict" or c.reason == "RecordsNamespace" then
      hs.status = "Degraded"
    else
      hs.status = "Progressing"
    end
    return hs
  end
end
return hs
