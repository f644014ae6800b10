-- Argo CD health check for modelservice.dev/ModelService (resource.customizations.health.modelservice.dev_ModelService).
-- Reads the kstatus-style status the operator writes: observedGeneration, conditions Ready/Reconciling/Stalled, phase.
-- Healthy: the operator has seen the current spec and Ready is True.
-- Degraded: Stalled is True (the operator cannot make progress: bad spec, failed conversion, failed verification)
--           or phase is Failed/Degraded.
-- Progressing: anything else, including a spec the operator has not observed yet (stale observedGeneration).
-- Written for Lua 5.1 (Argo CD's gopher-lua); no libraries beyond the base functions.
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function message_of(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local stalled = condition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message_of(stalled, "Stalled")
  return hs
end

local ready = condition(conditions, "Ready")
local ready_is_current = ready ~= nil and
  (generation == nil or ready.observedGeneration == nil or ready.observedGeneration >= generation)

if ready ~= nil and ready.status == "True" and ready_is_current then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Ready")
  return hs
end

local phase = obj.status.phase
if phase == "Failed" or phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = message_of(ready, phase)
  return hs
end

local reconciling = condition(conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message_of(reconciling, "Reconciling")
  return hs
end

hs.status = "Progressing"
if phase ~= nil then
  hs.message = message_of(ready, "Phase " .. phase)
else
  hs.message = message_of(ready, "Waiting for Ready")
end
return hs
