// Optional private networking (main.bicep: usePrivateEndpoints = true): a VNet with a subnet for
// private endpoints and one delegated to Flex Consumption VNet integration, a private endpoint
// and private DNS zone per data service. With publicNetworkAccess = 'Disabled' the services are
// then reachable only from this VNet (deploy from inside it, or open a temporary IP rule).
param location string
param tags object
param vnetName string
param addressPrefix string
param privateEndpointSubnetPrefix string
param functionSubnetPrefix string
param storageAccountId string
param cosmosAccountId string
param eventHubsNamespaceId string
param redisId string
param keyVaultId string

var targets = [
  { key: 'blob', resourceId: storageAccountId, groupId: 'blob', zone: 'privatelink.blob.${environment().suffixes.storage}' }
  { key: 'queue', resourceId: storageAccountId, groupId: 'queue', zone: 'privatelink.queue.${environment().suffixes.storage}' }
  { key: 'table', resourceId: storageAccountId, groupId: 'table', zone: 'privatelink.table.${environment().suffixes.storage}' }
  { key: 'cosmos', resourceId: cosmosAccountId, groupId: 'Sql', zone: 'privatelink.documents.azure.com' }
  { key: 'eventhubs', resourceId: eventHubsNamespaceId, groupId: 'namespace', zone: 'privatelink.servicebus.windows.net' }
  { key: 'redis', resourceId: redisId, groupId: 'redisCache', zone: 'privatelink.redis.cache.windows.net' }
  { key: 'keyvault', resourceId: keyVaultId, groupId: 'vault', zone: 'privatelink.vaultcore.azure.net' }
]

// Deny inbound from the internet; VNet-internal traffic (function -> endpoints) is allowed by
// the default rules.
resource nsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: '${vnetName}-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        name: 'deny-internet-inbound'
        properties: {
          priority: 4000
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: { addressPrefixes: [addressPrefix] }
    subnets: [
      {
        name: 'snet-private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: { id: nsg.id }
          privateEndpointNetworkPolicies: 'Enabled'
        }
      }
      {
        name: 'snet-function'
        properties: {
          addressPrefix: functionSubnetPrefix
          networkSecurityGroup: { id: nsg.id }
          delegations: [
            { name: 'flex-consumption', properties: { serviceName: 'Microsoft.App/environments' } }
          ]
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for t in targets: {
  name: t.zone
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (t, i) in targets: {
  parent: zones[i]
  name: '${vnetName}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: { id: vnet.id }
  }
}]

resource endpoints 'Microsoft.Network/privateEndpoints@2023-11-01' = [for t in targets: {
  name: 'pe-${t.key}-${last(split(t.resourceId, '/'))}'
  location: location
  tags: tags
  properties: {
    subnet: { id: vnet.properties.subnets[0].id }
    privateLinkServiceConnections: [
      {
        name: t.key
        properties: { privateLinkServiceId: t.resourceId, groupIds: [t.groupId] }
      }
    ]
  }
}]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = [for (t, i) in targets: {
  parent: endpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [{ name: t.key, properties: { privateDnsZoneId: zones[i].id } }]
  }
}]

output vnetId string = vnet.id
output functionSubnetId string = vnet.properties.subnets[1].id
output privateEndpointSubnetId string = vnet.properties.subnets[0].id
