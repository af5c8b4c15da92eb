-- Orthanc auto-routing: forward each chest radiograph received over DICOM to the clinassist
-- gateway (the "clinassist" entry of DicomModalities in orthanc.json). The gateway sends its
-- SR and Secondary Capture back into the same study; what arrives from the gateway's AE title
-- is never routed back to it.
-- The C-STORE runs as an Orthanc job: a failed one (gateway down) stays listed under /jobs,
-- where POST /jobs/{id}/resubmit sends it again.

local RADIOGRAPHY = { CR = true, DX = true }
local GATEWAY_AET = 'CLINASSIST'

function OnStoredInstance(instanceId, tags, metadata, origin)
   -- The same filter as the gateway's catch-up (serving/gateway/catchup.py): CR or DX, body
   -- part CHEST, absent or empty, not sent by the gateway.
   local bodyPart = string.upper(tags['BodyPartExamined'] or '')
   if origin['RequestOrigin'] == 'DicomProtocol' and origin['RemoteAet'] ~= GATEWAY_AET
      and RADIOGRAPHY[tags['Modality']] and (bodyPart == 'CHEST' or bodyPart == '') then
      RestApiPost('/modalities/clinassist/store',
                  DumpJson({ Resources = { instanceId }, Asynchronous = true }, true))
   end
end
