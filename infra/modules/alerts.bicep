// Alert rules on the custom metrics the service emits to Application Insights
// (opencensus metrics exporter -> `customMetrics`; see infra/alerts.md for names and thresholds).
// Log alerts (KQL over customMetrics) rather than metric alerts, because custom-metric
// dimensions (tenantId, destination) are only queryable as metrics when the App Insights
// "custom metric dimensions" preview is enabled; the logs always have them.
param location string
param tags object
param namePrefix string
param appInsightsId string
@description('E-mail addresses notified by the action group.')
param emailReceivers array

@description('Error-rate threshold as a fraction, e.g. 0.05 (failed / (succeeded + failed) deliveries per tenant, 5 min).')
param errorRate string = '0.05'
@description('Minimum deliveries in the window before the error rate counts (no alert on 1 of 2).')
param errorRateMinDeliveries int = 20
@description('Change-feed processing delay threshold (ms).')
param delayMs int = 30000
@description('Instance memory threshold (percent).')
param memoryPercent int = 80

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-ops'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'grc-ops'
    enabled: true
    emailReceivers: [for (address, i) in emailReceivers: {
      name: 'email-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
  }
}

// Each query returns one row per dimension value; the rule compares the measure column.
var errorRateQuery = replace('''
customMetrics
| where name in ("grc.deliveries.succeeded", "grc.deliveries.failed")
| extend tenantId = tostring(customDimensions.tenantId)
| summarize failed = sumif(valueSum, name == "grc.deliveries.failed"), total = sum(valueSum) by tenantId
| where total >= {minDeliveries}
| extend errorRate = failed / total
| project tenantId, errorRate
''', '{minDeliveries}', string(errorRateMinDeliveries))

var delayQuery = '''
customMetrics
| where name == "grc.changefeed.delay_ms"
| extend tenantId = tostring(customDimensions.tenantId), container = tostring(customDimensions.container)
| summarize delayMs = max(valueMax) by tenantId, container
'''

var memoryQuery = '''
customMetrics
| where name == "grc.instance.memory_percent"
| summarize memoryPercent = max(valueMax) by instance = cloud_RoleInstance
'''

// A destination fails when its health gauge reads 0, or when it had failed deliveries and no
// successful one in the window.
var failingDestinationQuery = '''
let health = customMetrics
    | where name == "grc.destination.healthy"
    | summarize healthy = min(valueMin) by destination = tostring(customDimensions.destination);
let deliveries = customMetrics
    | where name in ("grc.deliveries.succeeded", "grc.deliveries.failed")
    | summarize failed = sumif(valueSum, name == "grc.deliveries.failed"),
                succeeded = sumif(valueSum, name == "grc.deliveries.succeeded")
        by destination = tostring(customDimensions.destination);
health
| join kind=fullouter deliveries on destination
| extend destination = coalesce(destination, destination1)
| extend failing = iff(healthy == 0 or (failed > 0 and succeeded == 0), 1, 0)
| project destination, failing
'''

var rules = [
  {
    key: 'error-rate'
    displayName: 'GRC error rate > ${errorRate}'
    description: 'Failed / (succeeded + failed) deliveries of a tenant over 5 minutes (grc.deliveries.*).'
    severity: 1
    query: errorRateQuery
    measure: 'errorRate'
    // Decimal threshold: Bicep has no float literal, json() yields the number.
    threshold: json(errorRate)
    operator: 'GreaterThan'
    dimensions: ['tenantId']
  }
  {
    key: 'processing-delay'
    displayName: 'GRC processing delay > ${delayMs / 1000} s'
    description: 'Change-feed delay (now - document _ts) of a tenant container (grc.changefeed.delay_ms).'
    severity: 2
    query: delayQuery
    measure: 'delayMs'
    threshold: delayMs
    operator: 'GreaterThan'
    dimensions: ['tenantId', 'container']
  }
  {
    key: 'memory'
    displayName: 'GRC instance memory > ${memoryPercent} %'
    description: 'Memory of a Function App instance (grc.instance.memory_percent).'
    severity: 2
    query: memoryQuery
    measure: 'memoryPercent'
    threshold: memoryPercent
    operator: 'GreaterThan'
    dimensions: ['instance']
  }
  {
    key: 'failing-destination'
    displayName: 'GRC destination failing'
    description: 'grc.destination.healthy == 0, or grc.deliveries.failed > 0 with no grc.deliveries.succeeded, per destination.'
    severity: 1
    query: failingDestinationQuery
    measure: 'failing'
    threshold: 0
    operator: 'GreaterThan'
    dimensions: ['destination']
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: '${namePrefix}-${rule.key}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [appInsightsId]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Maximum'
          metricMeasureColumn: rule.measure
          operator: rule.operator
          threshold: rule.threshold
          dimensions: [for d in rule.dimensions: { name: d, operator: 'Include', values: ['*'] }]
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: [actionGroup.id] }
  }
}]

output actionGroupId string = actionGroup.id
output ruleNames array = [for (rule, i) in rules: alertRules[i].name]
