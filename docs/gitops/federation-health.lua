-- Argo CD health of a red.dev/Federation, from what the operator writes: status.observedGeneration,
-- status.phase and the Ready condition. A status older than the spec says nothing about the spec.
local hs = {status = "Progressing", message = "waiting for the Red operator"}
local status = obj.status
if status == nil then
  return hs
end
if status.observedGeneration ~= obj.metadata.generation then
  hs.message = "the Red operator has not yet observed generation " .. tostring(obj.metadata.generation)
  return hs
end
local ready = nil
for _, condition in ipairs(status.conditions or {}) do
  if condition.type == "Ready" then
    ready = condition
  end
end
local phase = status.phase or "Pending"
hs.message = phase
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = phase .. ": " .. ready.message
end
if status.progress ~= nil then
  hs.message = hs.message .. " (round " .. status.progress .. ")"
end
if phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Suspended" then
  hs.status = "Suspended"
elseif phase == "Succeeded" or (ready ~= nil and ready.status == "True") then
  hs.status = "Healthy"
end
return hs
