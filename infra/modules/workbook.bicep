// The operations workbook (Azure Monitor Workbooks): per tenant and service-wide charts of the grc.*
// custom metrics, the retry queue, and the alert rules that fired. Its content is
// infra/workbooks/operations.workbook.json (Workbook "Notebook/1.0" JSON, edited in the portal's
// Advanced Editor and pasted back); this module writes in what only the deployment knows: the
// Application Insights resource it reads, the alert thresholds drawn as lines, the storage account and
// queue whose depth it shows, the subscription whose alerts it lists.
// tests/test_infra_workbook.py checks that every metric, dimension and table its queries name is one
// the code emits (shared/observability/telemetry/catalogue.py), so the workbook cannot drift from the code.
param location string
param tags object

@description('Display name of the workbook in the portal.')
param displayName string

@description('Resource id of the Application Insights component the queries read (and the workbook is listed under).')
param appInsightsId string

@description('Resource id of the storage account holding the retry queue.')
param storageAccountId string

@description('Name of the retry queue (its poison queue is <name>-poison).')
param retryQueue string

@description('Error-rate alert line as a fraction, e.g. 0.05 (the alert rule\'s threshold).')
param errorRate string

@description('Deliveries in a window before the error rate counts (the alert rule\'s guard).')
param errorRateMinDeliveries int = 20

@description('Change-feed delay alert line in ms.')
param delayMs int

@description('Instance memory alert line in percent.')
param memoryPercent int

// The JSON file's placeholders, each written in once (tests/test_infra_workbook.py: none is left).
var template = loadTextContent('../workbooks/operations.workbook.json')
var step1 = replace(template, '__GRC_APPINSIGHTS_ID__', appInsightsId)
var step2 = replace(step1, '__GRC_SUBSCRIPTION_ID__', subscription().id)
var step3 = replace(step2, '__GRC_STORAGE_ACCOUNT_ID__', storageAccountId)
var step4 = replace(step3, '__GRC_RETRY_QUEUE__', retryQueue)
var step5 = replace(step4, '__GRC_ERROR_RATE__', errorRate)
var step6 = replace(step5, '__GRC_MIN_DELIVERIES__', string(errorRateMinDeliveries))
var step7 = replace(step6, '__GRC_DELAY_MS__', string(delayMs))
var serializedData = replace(step7, '__GRC_MEMORY_PERCENT__', string(memoryPercent))

// A shared workbook's name is a GUID; derived from the component, so a redeployment updates the same one.
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsightsId, 'grc-operations-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    // Listed under the Application Insights resource: Monitoring > Workbooks.
    sourceId: toLower(appInsightsId)
    serializedData: serializedData
    version: 'Notebook/1.0'
  }
}

output id string = workbook.id
output name string = workbook.name
